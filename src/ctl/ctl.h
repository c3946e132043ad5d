/* SPDX-License-Identifier: GPL-2.0-or-later */
/* tunnelgatectl: what the verbs share. Each group of verbs lives in its own
 * file (ctl-policy.c: check-policy; ctl-bus.c: the bus helpers and the
 * firewall and audit verbs; ctl-tunnel.c: the verbs that change tunnels;
 * ctl-show.c: the verbs that show them) and is listed once, in the verb
 * table of tunnelgatectl.c. */
#pragma once

#include <gio/gio.h>
#include <glib.h>

#include "tg-names.h"

/* Exit statuses, as `tunnelgatectl --help` and doc/cli.md document them. */
typedef enum {
  CTL_EXIT_OK = 0,
  /* 1: invalid policy, bad usage, unknown user; and what the daemon refused
   * for the request itself: InvalidArgument, PolicyDenied, LimitExceeded,
   * NotFound, NotSupported, AddressInUse, no such tunnel; `check`: denied;
   * `audit`: drift */
  CTL_EXIT_FAILURE = 1,
  /* 2: the daemon could not be reached, or it returned any other error
   * (NotAuthorized by polkit, ConnectFailed, AuthenticationFailed, ...) */
  CTL_EXIT_BUS = 2,
} CtlExit;

/* A verb gets its own name in argv[0] and its arguments after it, and
 * returns a CtlExit. */
typedef int (*CtlVerbFunc)(int argc, char **argv);

/* "tunnelgatectl: message" on stderr. */
void ctl_error(const char *format, ...) G_GNUC_PRINTF(1, 2);

/* Parses a verb's options with GOption: `tunnelgatectl VERB --help` shows
 * them, and a usage error is reported (naming the verb) as FALSE. */
gboolean ctl_parse_options(const char *verb, const char *parameters,
                           const char *description, const GOptionEntry *entries,
                           int *argc, char ***argv);

/* ctl-policy.c */
int ctl_check_policy(int argc, char **argv);

/* ctl-bus.c: talking to tunnelgated */
#define CTL_CALL_TIMEOUT_MS (120 * 1000)

/* The system bus ($DBUS_SYSTEM_BUS_ADDRESS when set), connected once; NULL
 * after printing why. */
GDBusConnection *ctl_bus(void);

/* Prints "tunnelgatectl: WHAT: message (org.tunnelgate.Error.Name)" and
 * returns the exit status for the error. */
int ctl_report_error(const char *what, GError *error);

/* A method call to the daemon with polkit's interactive authorization
 * allowed; NULL after printing why, with *status set. A call on a tunnel
 * object that does not exist is reported as "no tunnel ID" (status 1). */
GVariant *ctl_call(const char *path, const char *interface, const char *method,
                   GVariant *parameters, const GVariantType *reply_type, int *status);

/* The object path of a tunnel given as its Id or its path; NULL after
 * printing why. */
char *ctl_tunnel_path(const char *id_or_path);

/* The Id at the end of a tunnel's object path (a pointer into path). */
const char *ctl_tunnel_id(const char *path);

int ctl_firewall(int argc, char **argv);
int ctl_audit(int argc, char **argv);

/* ctl-tunnel.c: verbs that change tunnels or the policy */
int ctl_open(int argc, char **argv);
int ctl_close(int argc, char **argv);
int ctl_forward(int argc, char **argv);
int ctl_credentials(int argc, char **argv);
int ctl_check(int argc, char **argv);
int ctl_reload(int argc, char **argv);

/* ctl-show.c: verbs that show tunnels, and how tunnels are shown */
int ctl_list(int argc, char **argv);
int ctl_show(int argc, char **argv);
int ctl_watch(int argc, char **argv);

/* "12.3 MiB" (binary units, "512 B" below 1 KiB), whatever the locale. */
char *ctl_format_bytes(guint64 bytes);
/* Microseconds since the epoch as local ISO 8601: 2024-05-01T12:00:00+02:00. */
char *ctl_format_time(guint64 usec);
/* A listener's address and port: 127.0.0.1:8080, [::1]:8080, /a/socket. */
char *ctl_format_address(const char *address, guint16 port);
/* A tunnel's properties (a{sv}) as one line of JSON (doc/cli.md). */
void ctl_append_tunnel_json(GString *out, const char *path, GVariant *properties);
/* One line per listener: "  FORWARD: listening on ADDRESS". */
void ctl_print_listeners(GVariant *listeners);
