/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Opening a tunnel, however it is asked for: OpenTunnel (manager.c, once
 * polkit has answered) and the tunnels the daemon opens by itself. One path
 * for all: the server, login and key (an administrator's profile is read
 * from its file), the admission (admission.h), the session's settings, then
 * tg_tunnel_open(). It is below the manager, which parses the D-Bus side,
 * and above the tunnel, the admission and the gate. D-Bus thread only. */
#pragma once

#include "authz.h"
#include "daemon.h"
#include "forward-spec.h"
#include "session.h"
#include "tunnel.h"

/* keepalive-count when none is given: OpenSSH's ServerAliveCountMax */
#define TG_OPEN_DEFAULT_KEEPALIVE_COUNT 3

typedef struct _TgOpenRequest TgOpenRequest;

/* Called once: with the tunnel just made (connecting), or with NULL and why
 * not; the invocation, if any, is then still in the request, unanswered. */
typedef void (*TgOpenDoneFunc)(TgOpenRequest *request, TgTunnel *tunnel,
                               const GError *error, gpointer user_data);

/* A plain struct: tg_open_request_new() makes one with no credentials and
 * the defaults, its maker fills the fields, tg_open_request_free() frees
 * what is left in them. */
struct _TgOpenRequest {
  TgDaemon *daemon;

  /* what is asked for */
  TgDestination *destination; /* [user@]host[:port], or @profile */
  GPtrArray *forwards;        /* TgForward*; none for a profile (its own) */
  char *agent_path;           /* exactly one credential without a profile, */
  int agent_fd;               /* none with one; descriptors owned, -1: none */
  char *identity_path;
  int identity_fd;
  char *host_key;    /* a pinned "SHA256:..." or NULL */
  char *ciphers;     /* or NULL */
  char *description; /* or NULL (a profile's tunnel: the profile's) */
  guint32 keepalive;
  gboolean keepalive_given;
  guint32 keepalive_count;
  gboolean reconnect;
  gboolean bind_to_caller;
  /* saved in the store and opened again after a restart (tg_tunnel_persist());
   * implies reconnect. Needs credentials the daemon can open again: a path
   * or a profile, no descriptor. */
  gboolean persist;

  /* who asks, and what polkit granted them */
  TgCaller *owner;          /* owns the tunnel */
  TgPolicySubject *subject; /* the owner, for the policy */
  TgAction granted;
  /* answered once the tunnel is up (taken by the tunnel); NULL: nobody
   * waits, so even the first connection is tried again (retry_first) */
  GDBusMethodInvocation *invocation;
  char *tunnel_id; /* the tunnel's id, once given; a restored tunnel's own */

  /* a persistent tunnel restored: what it had */
  gint64 created;       /* its first open (µs, realtime); 0: now */
  GArray *listen_ports; /* guint16 per forward: where a port-0 listener binds
                         * (tg_admission_set_listen_port()); NULL: anywhere */

  /* the path's own */
  TgSessionConfig *config;
  char *profile_description;
  TgOpenDoneFunc done;
  gpointer done_data;
};

TgOpenRequest *tg_open_request_new(TgDaemon *daemon);
void tg_open_request_free(TgOpenRequest *request);

/* Opens the tunnel @request asks for (which the caller keeps until @done,
 * which may come before this returns). */
void tg_open_request_run(TgOpenRequest *request, TgOpenDoneFunc done, gpointer user_data);

/* "user@host:port", IPv6 addresses in brackets, as Destination shows it. */
char *tg_open_destination_text(const char *user, const char *host, guint16 port);
