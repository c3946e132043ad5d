/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A tunnel's SSH session and the thread that owns it.
 *
 * libssh is not thread-safe within one session, so each tunnel gets one
 * worker thread that alone touches its ssh_session: it opens the caller's
 * credentials (as the caller), connects, verifies the host key,
 * authenticates, then runs a poll() loop over the SSH socket, the tunnel's
 * listeners and its relayed connections (relay.c). The D-Bus thread never
 * blocks on a tunnel; it talks to the worker through a command queue and an
 * eventfd, and hears back through callbacks dispatched in its own main
 * context. Many tunnels means many threads, each idle in poll() when quiet. */
#pragma once

#include <glib.h>

#include "counters.h"
#include "credentials.h"
#include "forward-spec.h"
#include "hostkey.h"
#include "policy.h"

/* What a worker reports of its session (TgSessionStateFunc). */
typedef enum {
  TG_SESSION_UP,
  /* the session was lost (or the system sleeps) and is tried again: the
   * listeners stay bound; the next attempt and when it comes are told */
  TG_SESSION_RECONNECTING,
  /* connected and authenticated again: the D-Bus thread re-admits the
   * forwards and answers with tg_session_readmitted() before UP */
  TG_SESSION_READMIT,
  TG_SESSION_FAILED,
  TG_SESSION_CLOSED,
} TgSessionState;

typedef struct {
  TgSessionState state;
  const GError *error;  /* FAILED: why; RECONNECTING: what was lost, or why the
                         * last attempt failed */
  guint attempt;        /* RECONNECTING: the number of the next attempt, from 1;
                         * 0 while suspended (no attempt until a resume) */
  gint64 next_attempt;  /* RECONNECTING: its wall-clock time (µs), 0: none */
  gboolean reconnected; /* UP: again, after RECONNECTING */
  gboolean suspended;   /* RECONNECTING: closed for sleep, as asked */
} TgSessionReport;

/* Where the connections of a remote (R) forward go: its destination's
 * addresses, resolved when the forward was added (and pinned in the
 * firewall); each connection tries them in order. */
typedef struct {
  guint forward_index;
  GArray *addresses; /* struct sockaddr_storage, port set */
} TgConnectBack;

TgConnectBack *tg_connect_back_new(guint forward_index);
TgConnectBack *tg_connect_back_copy(const TgConnectBack *connect_back);
void tg_connect_back_free(TgConnectBack *connect_back);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgConnectBack, tg_connect_back_free)

typedef struct {
  char *host; /* SSH server */
  guint16 port;
  char *user;       /* login name on the server */
  TgIdentity owner; /* the caller: credentials are opened with these rights */

  /* Exactly one credential source; fds are owned (-1 when unset). */
  char *agent_path;
  int agent_fd;
  char *identity_path;
  int identity_fd;

  char *host_key; /* pinned "SHA256:..." or NULL */
  TgHostKeyMode host_key_mode;
  char *ciphers;           /* libssh cipher list or NULL for the defaults */
  guint keepalive_seconds; /* 0: none (TCP keepalive every 60 s only) */
  guint keepalive_count;   /* unanswered keepalives that mean the server is gone */
  guint connect_timeout_seconds;
  /* a lost session is tried again (keepalive, credentials kept, listeners
   * kept bound); with retry_first also the first connection (a tunnel the
   * daemon opens by itself: no caller waits for an answer) */
  gboolean reconnect;
  gboolean retry_first;
  char *ssh_dir;             /* what libssh takes for ~/.ssh: the state dir */
  char *known_hosts;         /* the daemon's own known_hosts */
  char *global_known_hosts;  /* /etc/ssh/ssh_known_hosts */
  char *tunnel_id;           /* for log fields */
  guint32 socket_mark;       /* SO_MARK of the SSH socket (the firewall's); 0: none */
  guint32 connect_back_mark; /* SO_MARK of connect-back sockets; 0: none */

  GPtrArray *forwards;      /* TgForward*, owned */
  GPtrArray *listeners;     /* TgListener*, owned; bound, not yet listening */
  GPtrArray *connect_backs; /* TgConnectBack*, owned: one per R forward */

  /* D: each SOCKS request is checked against the policy for the owner;
   * both are replaced by tg_session_set_policy() (under the session's lock) */
  TgPolicySubject *subject; /* owned */
  TgPolicy *policy;         /* a reference */
} TgSessionConfig;

TgSessionConfig *tg_session_config_new(void);
void tg_session_config_free(TgSessionConfig *config);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgSessionConfig, tg_session_config_free)

/* Called in the creating thread's main context. Without reconnect the
 * worker reports UP at most once; with it, RECONNECTING, READMIT and UP
 * again any number of times; then exactly one of FAILED or CLOSED as its
 * last report. */
typedef void (*TgSessionStateFunc)(const TgSessionReport *report, gpointer user_data);

/* The server listens for a remote forward: on @address (as asked:
 * "localhost", an address, or "*") and @port (the one it chose for port 0).
 * Called before UP for the tunnel's first forwards, and before the
 * acknowledgement of an AddForward. */
typedef void (*TgSessionListenFunc)(guint forward_index, const char *address,
                                    guint16 port, gpointer user_data);

typedef struct _TgSession TgSession;

/* Takes ownership of config. counters must outlive the session; usage (the
 * owner's connections over all tunnels) and daemon_usage (everyone's) are
 * shared and referenced. */
TgSession *tg_session_start(TgSessionConfig *config, TgCounters *counters, TgUsage *usage,
                            TgUsage *daemon_usage, TgSessionStateFunc state_func,
                            TgSessionListenFunc listen_func, gpointer user_data);

/* Called in the D-Bus thread once the worker has applied a command
 * (applied), found the session ending (not applied, no error: nothing runs),
 * or could not apply it (not applied, @error: the server refused to listen
 * for a remote forward). */
typedef void (*TgSessionDoneFunc)(gboolean applied, const GError *error,
                                  gpointer user_data);

/* Adds a forward (taken) with its bound listeners (taken; L and D) or its
 * connect-back addresses (taken; R, else NULL) at forward_index, which must
 * be the number of forwards the session has had so far. */
void tg_session_add_forward(TgSession *session, guint forward_index, TgForward *forward,
                            GPtrArray *listeners, TgConnectBack *connect_back,
                            TgSessionDoneFunc done, gpointer done_data);

/* Closes the listeners and connections of one forward; the tunnel runs on. */
void tg_session_remove_forward(TgSession *session, guint forward_index,
                               TgSessionDoneFunc done, gpointer done_data);

/* The policy and the owner (a copy is kept; their groups may have changed)
 * the worker checks SOCKS requests and MaxConnections refusals against from
 * now on. */
void tg_session_set_policy(TgSession *session, TgPolicy *policy,
                           const TgPolicySubject *subject);

/* The answer to READMIT: NULL, the forwards the policy no longer allows
 * having been removed first (tg_session_remove_forward()), and the session
 * goes UP; or why the tunnel may not go on (it FAILS with a copy of it). */
void tg_session_readmitted(TgSession *session, const GError *refusal);

/* The network changed or the system resumed: a session that is down tries
 * again at once; one that is up is asked for a sign of life (a keepalive
 * the server must answer within TG_SESSION_CHECK_SECONDS) and counted lost
 * without it. */
#define TG_SESSION_CHECK_SECONDS 5
void tg_session_check_now(TgSession *session);

/* @sleeping: the system goes to sleep: a session with reconnect closes
 * cleanly (the server frees its remote listeners at once), reports
 * RECONNECTING with suspended set and makes no attempt until it is called
 * again with FALSE (the resume), which brings one at once (and asks a
 * session still up for a sign of life). Sessions without reconnect go on. */
void tg_session_suspend(TgSession *session, gboolean sleeping);

/* New credentials (exactly one of them; paths and descriptors taken) for
 * the next attempt: the session that is up goes on with what it logged in
 * with; a reconnecting one tries at once with these. */
void tg_session_set_credentials(TgSession *session, char *agent_path, int agent_fd,
                                char *identity_path, int identity_fd);

/* The wait before attempt @attempt (from 1; after a change of the network
 * it counts from 1 again), in µs: a random time in [d/2, d], d =
 * min(2^(attempt-1), 60) seconds ("equal jitter": quick at first, never in
 * step with other tunnels of the same server, at most a minute). */
#define TG_SESSION_RETRY_MAX_SECONDS 60
gint64 tg_session_retry_delay(guint attempt);

/* At most this many attempts after a loss (G_MAXUINT, the default: no
 * limit; 0: none), from the policy (MaxReconnectAttempts). */
void tg_session_set_max_attempts(TgSession *session, guint max_attempts);

/* Asks the worker to close everything; CLOSED is reported when done. */
void tg_session_stop(TgSession *session);

/* Joins the worker; only after its last report. */
void tg_session_free(TgSession *session);
