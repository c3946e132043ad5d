/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Netwatch: tells the daemon when the network changed and when the machine
 * goes to sleep or resumed, so that tunnels with `reconnect` react at once
 * instead of waiting for a keepalive to time out.
 *
 * The network: an rtnetlink socket (NETLINK_ROUTE) subscribed to the route,
 * address and link groups of IPv4 and IPv6, read in the main context. Only
 * what can change where packets go counts: routes of the main table
 * (default routes above all; not the local table's, not cloned or cached
 * ones, not broadcast/multicast/local types), addresses added or removed,
 * and links going up or down (IFF_UP/IFF_RUNNING, which follows the
 * operstate). Links and addresses are remembered (dumped at start and after
 * an overrun), because the kernel repeats RTM_NEWLINK and RTM_NEWADDR for
 * things that change nothing: a wireless driver's events, an IPv6 router
 * advertisement or a DHCP renewal refreshing an address's lifetime. Those
 * would otherwise make every tunnel reconnect every few minutes.
 *
 * Debounce: one change comes as a burst (a link going down takes its
 * addresses and routes; DHCP adds an address, then a route), and the daemon
 * should react once, when the burst is over: a change is reported
 * TG_NETWATCH_DEBOUNCE_MS after the last message of a burst, at the latest
 * TG_NETWATCH_DEBOUNCE_MAX_MS after the first (a flapping link still gets
 * reported), with the cause of the first and "(and N more changes)".
 *
 * Only the kernel is believed: a message whose sender address is not the
 * kernel's (nl_pid 0) is dropped. On NETLINK_ROUTE only privileged
 * processes may send to another socket, but a message made up by one would
 * make the daemon reconnect every tunnel at will and put its names in the
 * log. Every length is checked (NLMSG_OK, RTA_OK, each attribute's size);
 * what does not add up is skipped, never trusted. An overrun (ENOBUFS:
 * the kernel dropped messages) counts as a change, and the remembered state
 * is read again.
 *
 * Sleep: logind's org.freedesktop.login1.Manager.PrepareForSleep(b), only
 * from the current owner of org.freedesktop.login1 (watched, so logind may
 * come later or restart). With @inhibit, whenever logind is there the
 * netwatch holds a "delay" sleep inhibitor (Inhibit("sleep", ...)), so that
 * on PrepareForSleep(true) the daemon can close its SSH sessions before the
 * machine sleeps; tg_netwatch_release_sleep() then lets it sleep, and so
 * does a safety timeout (TG_NETWATCH_SLEEP_HOLD_MS, below logind's default
 * InhibitDelayMaxSec of 5 s), so that a bug never keeps a machine awake.
 * After PrepareForSleep(false) a new inhibitor is taken. logind's errors
 * are logged, never fatal.
 *
 * Requires: the thread of the main context it was made in, always. */
#pragma once

#include <gio/gio.h>

#define TG_NETWATCH_DEBOUNCE_MS 300
#define TG_NETWATCH_DEBOUNCE_MAX_MS 2000
#define TG_NETWATCH_SLEEP_HOLD_MS 3000

typedef enum {
  TG_NETWATCH_NETWORK_CHANGED, /* routes/addresses/links changed (debounced) */
  TG_NETWATCH_SLEEPING,        /* PrepareForSleep(true) */
  TG_NETWATCH_RESUMED,         /* PrepareForSleep(false) */
} TgNetwatchEvent;

/* @cause: what happened, for the log ("default route added via 10.0.0.1 dev
 * eth0", "link veth0 down", "the system is going to sleep"). @func must not
 * free the netwatch. */
typedef void (*TgNetwatchFunc)(TgNetwatchEvent event, const char *cause,
                               gpointer user_data);

typedef struct _TgNetwatch TgNetwatch;

/* @bus: the daemon's system-bus connection (logind lives there); NULL: the
 * network only. @inhibit: take a "delay" sleep inhibitor whenever logind is
 * present (and again after each resume). NULL with @error when the netlink
 * socket cannot be had. */
TgNetwatch *tg_netwatch_new(GDBusConnection *bus, gboolean inhibit, TgNetwatchFunc func,
                            gpointer user_data, GError **error);
/* The daemon has closed what it wanted to close before sleep: let the
 * system sleep (closes the inhibitor fd). Harmless when none is held, and
 * only between SLEEPING and RESUMED: a call that comes after the resume
 * leaves the next sleep's inhibitor alone. */
void tg_netwatch_release_sleep(TgNetwatch *netwatch);
/* Whether an inhibitor fd is held (tests, status). */
gboolean tg_netwatch_holds_inhibitor(TgNetwatch *netwatch);
void tg_netwatch_free(TgNetwatch *netwatch);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgNetwatch, tg_netwatch_free)

/* ---- the pure part (unit tests) ---- */

/* What the kernel said so far: link names and whether each is up, and the
 * addresses of each link. */
typedef struct _TgNetwatchState TgNetwatchState;

TgNetwatchState *tg_netwatch_state_new(void);
void tg_netwatch_state_free(TgNetwatchState *state);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgNetwatchState, tg_netwatch_state_free)

/* Classifies the rtnetlink messages in @buffer (@length bytes, 4-byte
 * aligned, as one recv() gives them) against @state, and updates @state.
 * Returns how many were relevant changes; *@cause (may be NULL), when it is
 * NULL and one was, gets the cause of the first (g_free() it). Messages
 * that are malformed, truncated or of other kinds are skipped; the first
 * header whose length does not fit ends the buffer. */
guint tg_netwatch_classify(TgNetwatchState *state, const void *buffer, gsize length,
                           char **cause);
