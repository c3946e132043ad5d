/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libssh/libssh.h>
#include <libssh/server.h> /* ssh_send_keepalive() and the ssh_message calls for
                            * channel opens: usable by clients too */

#include "accounts.h"
#include "hostkey.h"
#include "listener.h"
#include "log.h"
#include "peer-owner.h"
#include "relay.h"
#include "resolve.h"
#include "tcp-info.h"
#include "text.h"
#include "tg-error.h"

#define MAX_KEY_FILE_BYTES (64 * 1024)
#define MAX_CONNECTIONS_PER_TUNNEL 1024
#define ACCEPTS_PER_ROUND 64
#define PUMP_ROUNDS 64
#define SOCKS_HANDSHAKE_SECONDS 30
#define ACCEPT_PAUSE_USEC (250 * G_TIME_SPAN_MILLISECOND) /* out of fds: rest */
#define ACCEPT_PAUSE_LOG_USEC (60 * G_TIME_SPAN_SECOND)   /* one warning a minute */
/* R with port 0 on a busy session: ports tried (Linux's ephemeral range) */
#define FIRST_RANDOM_PORT 32768
#define LAST_RANDOM_PORT 60999
#define RANDOM_PORT_ATTEMPTS 8
/* while down, a new connection is accepted and held at most this long for
 * the session to come back; at most MAX_HELD at once, the others refused */
#define HOLD_SECONDS 15
#define MAX_HELD 64
#define READMIT_SECONDS 30 /* the D-Bus thread answers READMIT in this time */
/* an R forward's fixed port the server still holds (its old session lingers)
 * is asked for again: every 1 s, doubling up to this */
#define LISTEN_RETRY_MAX_SECONDS 30
#define AGENT_ANSWER_MAX_BYTES (256 * 1024)
#define MAX_STALE_CONNECTIONS 4 /* lost sessions' sockets kept to reset later */

/* A remote forward the server listens for (worker thread only). */
typedef struct {
  guint forward_index;
  char address[256]; /* as sent: "localhost", "", an address */
  guint16 port;      /* as bound (the server's choice for 0) */
  gboolean active;   /* listening; FALSE once cancelled */
} RemoteListen;

/* After a reconnect, an R forward's port the server would not give back
 * yet (worker thread only). */
typedef struct {
  guint forward_index;
  gint64 next_try; /* monotonic µs */
  guint tries;
} PendingListen;

/* A connection accepted while the session is down, waiting for it. */
typedef struct {
  int fd;
  guint forward_index;
  char address[INET6_ADDRSTRLEN];
  guint16 port;
  gint64 until; /* monotonic µs: refused then */
} HeldConnection;

struct _TgSession {
  TgSessionConfig *config;
  TgCounters *counters;
  TgUsage *usage;
  TgUsage *daemon_usage;
  GMainContext *context;
  TgSessionStateFunc state_func;
  TgSessionListenFunc listen_func;
  gpointer user_data;
  GThread *thread;
  int wake_fd;
  /* sock_diag, for ListenerUsers on accept: opened with the session, so
   * that a connection accepted at the descriptor limit can be asked about */
  int diag_fd;
  atomic_bool stop_requested;
  atomic_bool check_requested;   /* tg_session_check_now() */
  atomic_bool suspend_requested; /* tg_session_suspend() */
  atomic_uint max_attempts;

  /* Duplicates of the SSH and agent sockets, kept only to shutdown() them
   * from tg_session_stop(): libssh blocks in the handshake and in agent
   * talk, and may close its own descriptors at any time (so their numbers
   * must never be used from another thread). Guarded by lock. */
  GMutex lock;
  int cancel_fds[2];
  GQueue commands;            /* Command*: forwards to add or remove, for the worker */
  gint pending_acks;          /* atomic: acknowledgements not yet dispatched */
  gint64 accept_paused_until; /* listeners rest until then (out of fds) */
  gint64 accept_pause_logged;
  gboolean finished; /* the worker took its last command: answer new ones at once */
  /* tg_session_set_credentials(): taken by the worker before its next
   * attempt (fds -1 when unset) */
  gboolean new_credentials;
  char *new_agent_path, *new_identity_path;
  int new_agent_fd, new_identity_fd;

  /* worker thread only */
  int view_fd;        /* the opener's file-system view: the tunnel's paths mean */
  GError *view_error; /* what they mean there (or why it could not be seen) */
  ssh_session ssh;
  ssh_event event;
  int agent_fd;
  ssh_key identity;
  GPtrArray *relays;       /* TgRelay* */
  GArray *remotes;         /* RemoteListen */
  GArray *pending_listens; /* PendingListen */
  GArray *removed;         /* gboolean per forward index: taken away */
  GArray *held;            /* HeldConnection */
  GArray *stale;           /* int: sockets of lost sessions, reset once back */
  struct pollfd *pollfds;
  gsize pollfds_size;
  gboolean up;          /* serving: connections get relays */
  gboolean was_up;      /* it has been up: a loss is reconnected */
  gboolean readmitting; /* READMIT reported, tg_session_readmitted() awaited */
  gboolean readmitted;
  GError *readmit_refusal;
  /* keepalive: the server's last sign of life, and our last question */
  gint64 last_heard;
  gint64 last_probe;
  gboolean probe_in_flight; /* libssh's global request state is ours */
  guint64 bytes_heard;      /* the kernel's count of what the server sent */
  gint64 check_deadline;    /* tg_session_check_now(): an answer by then, 0: none */
  gint64 check_started;
  /* the last attempt failed before the server was asked: the agent or key
   * could not be reached (or the agent held no key), which may pass */
  gboolean credentials_unreachable;
  gboolean refused_for_good; /* the re-admission refused: no retry */
};

TgSessionConfig *
tg_session_config_new(void)
{
  TgSessionConfig *config = g_new0(TgSessionConfig, 1);

  config->agent_fd = config->identity_fd = -1;
  config->forwards = g_ptr_array_new_with_free_func((GDestroyNotify)tg_forward_free);
  config->listeners = g_ptr_array_new_with_free_func((GDestroyNotify)tg_listener_free);
  config->connect_backs =
      g_ptr_array_new_with_free_func((GDestroyNotify)tg_connect_back_free);
  return config;
}

TgConnectBack *
tg_connect_back_new(guint forward_index)
{
  TgConnectBack *connect_back = g_new0(TgConnectBack, 1);

  connect_back->forward_index = forward_index;
  connect_back->addresses = g_array_new(FALSE, TRUE, sizeof(struct sockaddr_storage));
  return connect_back;
}

TgConnectBack *
tg_connect_back_copy(const TgConnectBack *connect_back)
{
  TgConnectBack *copy = tg_connect_back_new(connect_back->forward_index);

  g_array_append_vals(copy->addresses, connect_back->addresses->data,
                      connect_back->addresses->len);
  return copy;
}

void
tg_connect_back_free(TgConnectBack *connect_back)
{
  if (connect_back == NULL)
    return;
  g_array_unref(connect_back->addresses);
  g_free(connect_back);
}

void
tg_session_config_free(TgSessionConfig *config)
{
  if (config == NULL)
    return;
  g_free(config->host);
  g_free(config->user);
  g_free(config->owner.user_name);
  g_free(config->agent_path);
  if (config->agent_fd >= 0)
    close(config->agent_fd);
  g_free(config->identity_path);
  if (config->identity_fd >= 0)
    close(config->identity_fd);
  g_free(config->host_key);
  g_free(config->ciphers);
  g_free(config->ssh_dir);
  g_free(config->known_hosts);
  g_free(config->global_known_hosts);
  g_free(config->tunnel_id);
  g_ptr_array_unref(config->forwards);
  g_ptr_array_unref(config->listeners);
  g_ptr_array_unref(config->connect_backs);
  if (config->policy != NULL)
    tg_policy_unref(config->policy);
  g_clear_pointer(&config->subject, tg_policy_subject_free);
  g_free(config);
}

/* ---- reports to the D-Bus thread ---- */

typedef struct {
  TgSession *session;
  TgSessionReport report;
  GError *error;
} Report;

static void dispatch_later(TgSession *session, GSourceFunc func, gpointer data,
                           GDestroyNotify destroy);
static void report_free(gpointer data);

static gboolean
report_dispatch(gpointer data)
{
  Report *report = data;
  TgSession *session = report->session;

  /* The final report may free the session's user: an acknowledgement still
   * on its way (a command the D-Bus thread queued after the worker ended)
   * goes first, and this report after it. */
  if ((report->report.state == TG_SESSION_FAILED ||
       report->report.state == TG_SESSION_CLOSED) &&
      g_atomic_int_get(&session->pending_acks) > 0) {
    Report *again = g_new0(Report, 1);

    *again = *report;
    report->error = NULL;
    dispatch_later(session, report_dispatch, again, report_free);
    return G_SOURCE_REMOVE;
  }
  report->report.error = report->error;
  session->state_func(&report->report, session->user_data);
  return G_SOURCE_REMOVE;
}

static void
report_free(gpointer data)
{
  Report *report = data;

  g_clear_error(&report->error);
  g_free(report);
}

/* Everything the worker tells the D-Bus thread goes this way: always
 * queued, never run here (g_main_context_invoke() would call it in this
 * thread whenever the D-Bus thread is not inside its loop), and all at one
 * priority, so that it arrives in the order it was sent: the final report,
 * after which the tunnel may be freed, comes after every acknowledgement. */
static void
dispatch_later(TgSession *session, GSourceFunc func, gpointer data,
               GDestroyNotify destroy)
{
  GSource *source = g_idle_source_new();

  g_source_set_priority(source, G_PRIORITY_DEFAULT);
  g_source_set_callback(source, func, data, destroy);
  g_source_attach(source, session->context);
  g_source_unref(source);
}

static void
report_full(TgSession *session, const TgSessionReport *what, GError *error)
{
  Report *report = g_new0(Report, 1);

  report->session = session;
  report->report = *what;
  report->error = error;
  tg_text_error_printable(report->error); /* the server's words, often */
  dispatch_later(session, report_dispatch, report, report_free);
}

static void
report_state(TgSession *session, TgSessionState state, GError *error)
{
  TgSessionReport what = { .state = state };

  report_full(session, &what, error);
}

typedef struct {
  TgSession *session;
  guint forward_index;
  char *address;
  guint16 port;
} ListenReport;

static gboolean
listen_report_dispatch(gpointer data)
{
  ListenReport *report = data;

  report->session->listen_func(report->forward_index, report->address, report->port,
                               report->session->user_data);
  return G_SOURCE_REMOVE;
}

static void
listen_report_free(gpointer data)
{
  ListenReport *report = data;

  g_free(report->address);
  g_free(report);
}

/* The D-Bus thread hears it before UP (or before the AddForward
 * acknowledgement that follows it). */
static void
report_listener(TgSession *session, guint forward_index, const char *address,
                guint16 port)
{
  ListenReport *report = g_new0(ListenReport, 1);

  report->session = session;
  report->forward_index = forward_index;
  report->address = g_strdup(address);
  report->port = port;
  dispatch_later(session, listen_report_dispatch, report, listen_report_free);
}

/* Keeps a duplicate of fd that tg_session_stop() can shut down. */
static void
add_cancel_fd(TgSession *session, int fd)
{
  g_mutex_lock(&session->lock);
  for (guint i = 0; i < G_N_ELEMENTS(session->cancel_fds); i++) {
    if (session->cancel_fds[i] < 0) {
      session->cancel_fds[i] = fcntl(fd, F_DUPFD_CLOEXEC, 3);
      break;
    }
  }
  g_mutex_unlock(&session->lock);
}

static void
close_cancel_fds(TgSession *session)
{
  g_mutex_lock(&session->lock);
  for (guint i = 0; i < G_N_ELEMENTS(session->cancel_fds); i++) {
    if (session->cancel_fds[i] >= 0)
      close(g_steal_fd(&session->cancel_fds[i]));
  }
  g_mutex_unlock(&session->lock);
}

/* ---- credentials, opened with the caller's rights ---- */

/* The view of the process that opened the tunnel, taken when its worker
 * starts (the caller is waiting for its answer then), before any path is
 * needed: the agent's, the key's, the Unix-socket listeners' of the tunnel
 * and of forwards added later. */
static void
open_view(TgSession *session)
{
  session->view_fd = tg_open_view_as_user(&session->config->owner, &session->view_error);
}

static int
view(TgSession *session, GError **error)
{
  /* no process or descriptor to open it with at the start: try again */
  if (session->view_fd < 0 &&
      g_error_matches(session->view_error, TG_ERROR, TG_ERROR_LIMIT_EXCEEDED)) {
    g_clear_error(&session->view_error);
    open_view(session);
  }
  if (session->view_fd < 0) {
    g_propagate_error(error, g_error_copy(session->view_error));
    return -1;
  }
  return session->view_fd;
}

/* Without a callback, OpenSSL would try to prompt on a terminal. */
static int
refuse_passphrase(const char *prompt, char *buffer, size_t length, int echo, int verify,
                  void *user_data)
{
  return -1;
}

static void clear_new_credentials(TgSession *session);

/* Credentials given since the last attempt replace the old ones (and the
 * key kept from them). */
static void
take_new_credentials(TgSession *session)
{
  TgSessionConfig *config = session->config;

  g_mutex_lock(&session->lock);
  if (session->new_credentials) {
    session->new_credentials = FALSE;
    g_free(config->agent_path);
    config->agent_path = g_steal_pointer(&session->new_agent_path);
    if (config->agent_fd >= 0)
      close(config->agent_fd);
    config->agent_fd = g_steal_fd(&session->new_agent_fd);
    g_free(config->identity_path);
    config->identity_path = g_steal_pointer(&session->new_identity_path);
    if (config->identity_fd >= 0)
      close(config->identity_fd);
    config->identity_fd = g_steal_fd(&session->new_identity_fd);
    g_clear_pointer(&session->identity, ssh_key_free);
  }
  g_mutex_unlock(&session->lock);
}

static gboolean
load_credentials(TgSession *session, GError **error)
{
  TgSessionConfig *config = session->config;
  g_autoptr(GBytes) key_text = NULL;
  int key_fd;

  take_new_credentials(session);
  if (config->agent_path != NULL) {
    int view_fd = view(session, error);

    if (view_fd < 0)
      return FALSE;
    session->agent_fd =
        tg_connect_unix_as_user(&config->owner, view_fd, config->agent_path, error);
    if (session->agent_fd < 0) {
      session->credentials_unreachable = TRUE; /* e.g. the agent restarts */
      return FALSE;
    }
  } else if (config->agent_fd >= 0 && config->reconnect) {
    /* the caller's connection to their agent serves every attempt: libssh
     * gets a duplicate each time (it closes the one it has) */
    session->agent_fd = fcntl(config->agent_fd, F_DUPFD_CLOEXEC, 3);
    if (session->agent_fd < 0) {
      g_set_error(error, TG_ERROR, TG_ERROR_LIMIT_EXCEEDED,
                  "Cannot use the ssh-agent descriptor: %s", g_strerror(errno));
      return FALSE;
    }
  } else if (config->agent_fd >= 0) {
    session->agent_fd = config->agent_fd;
    config->agent_fd = -1;
  }
  if (session->agent_fd >= 0) {
    /* libssh talks to the agent without a timeout: bound it here, and let
     * tg_session_stop() cut it */
    struct timeval timeout = { .tv_sec = config->connect_timeout_seconds };
    setsockopt(session->agent_fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(session->agent_fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    add_cancel_fd(session, session->agent_fd);
    return tg_socket_peer_is_uid(session->agent_fd, config->owner.uid, error);
  }

  if (session->identity != NULL)
    return TRUE; /* read at the first attempt, kept while the tunnel lives */
  if (config->identity_path != NULL) {
    int view_fd = view(session, error);

    key_fd = view_fd < 0 ? -1
                         : tg_open_file_as_user(&config->owner, view_fd,
                                                config->identity_path, error);
  } else
    key_fd = g_steal_fd(&config->identity_fd);
  if (key_fd < 0) {
    session->credentials_unreachable = config->identity_path != NULL;
    return FALSE;
  }
  key_text = tg_read_key_fd(key_fd, MAX_KEY_FILE_BYTES, -1, error);
  close(key_fd);
  if (key_text == NULL)
    return FALSE;
  {
    g_autofree char *text =
        g_strndup(g_bytes_get_data(key_text, NULL), g_bytes_get_size(key_text));
    int rc = ssh_pki_import_privkey_base64(text, NULL, refuse_passphrase, NULL,
                                           &session->identity);
    explicit_bzero(text, strlen(text));
    explicit_bzero((gpointer)g_bytes_get_data(key_text, NULL),
                   g_bytes_get_size(key_text));
    if (rc != SSH_OK) {
      g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                          "The identity is not a private key tunnelgate can read, or it "
                          "is protected by a passphrase (load such keys into your "
                          "ssh-agent and use the agent option)");
      return FALSE;
    }
  }
  return TRUE;
}

/* ---- connecting ---- */

static gboolean
stop_requested(TgSession *session)
{
  return atomic_load(&session->stop_requested);
}

/* Waits for a non-blocking connect, or for tg_session_stop(). */
static int
wait_connected(TgSession *session, int fd, int timeout_ms)
{
  gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  int error = 0;
  socklen_t length = sizeof error;

  for (;;) {
    struct pollfd pfds[2] = { { .fd = fd, .events = POLLOUT },
                              { .fd = session->wake_fd, .events = POLLIN } };
    gint64 left = (deadline - g_get_monotonic_time()) / 1000;
    int rc;

    if (left <= 0)
      return ETIMEDOUT;
    rc = poll(pfds, 2, (int)left);
    if (rc < 0 && errno != EINTR)
      return errno;
    if (stop_requested(session))
      return ECANCELED;
    if (rc > 0 && pfds[0].revents != 0)
      break;
    if (rc > 0 && (pfds[1].revents & POLLIN)) {
      /* a command: the relay loop applies queued ones when it starts */
      eventfd_t ignored;
      eventfd_read(session->wake_fd, &ignored);
    }
  }
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
  return error;
}

/* A non-blocking TCP socket with TCP_NODELAY and, when @mark is not 0, the
 * firewall's SO_MARK, set before connect() so that the SYN carries it. -1
 * with errno when either fails: an unmarked socket is never used. */
static int
marked_tcp_socket(int family, guint32 mark)
{
  int one = 1;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

  if (fd < 0)
    return -1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (mark != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    int saved = errno;

    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

static int
connect_tcp(TgSession *session, GError **error)
{
  TgSessionConfig *config = session->config;
  g_autoptr(GError) resolve_error = NULL;
  g_autoptr(GArray) addresses =
      tg_resolve_sync(config->host, config->port, AI_ADDRCONFIG, &resolve_error);
  int last_error = 0;

  if (addresses == NULL) {
    g_set_error(error, TG_ERROR, TG_ERROR_CONNECT_FAILED, "Cannot resolve %s: %s",
                config->host, resolve_error->message);
    return -1;
  }
  for (guint i = 0; i < addresses->len && !stop_requested(session); i++) {
    const struct sockaddr_storage *address =
        &g_array_index(addresses, struct sockaddr_storage, i);
    socklen_t length = address->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                      : sizeof(struct sockaddr_in);
    /* the firewall's lockdown lets only marked sockets reach SSH servers */
    int fd = marked_tcp_socket(address->ss_family, config->socket_mark);

    if (fd < 0 && errno == EPERM) {
      g_set_error(error, TG_ERROR, TG_ERROR_CONNECT_FAILED,
                  "Cannot mark the connection to %s for the firewall (SO_MARK): %s",
                  config->host, g_strerror(EPERM));
      return -1;
    }
    if (fd < 0) {
      last_error = errno;
      continue;
    }
    if (connect(fd, (const struct sockaddr *)address, length) == 0)
      last_error = 0;
    else if (errno == EINPROGRESS)
      last_error = wait_connected(session, fd, config->connect_timeout_seconds * 1000);
    else
      last_error = errno;
    if (last_error == 0)
      return fd;
    close(fd);
  }
  if (stop_requested(session))
    last_error = ECANCELED;
  g_set_error(error, TG_ERROR, TG_ERROR_CONNECT_FAILED,
              "Cannot connect to %s port %u: %s", config->host, config->port,
              g_strerror(last_error != 0 ? last_error : EHOSTUNREACH));
  return -1;
}

static gboolean
configure_ssh(TgSession *session, int fd, GError **error)
{
  TgSessionConfig *config = session->config;
  long timeout = config->connect_timeout_seconds;
  unsigned int port = config->port;
  int no = 0;
  ssh_session ssh = session->ssh;

  /* Never read root's ~/.ssh/config or /etc/ssh/ssh_config, and keep every
   * file libssh might consult pointed at the daemon's own. */
  if (ssh_options_set(ssh, SSH_OPTIONS_PROCESS_CONFIG, &no) != SSH_OK ||
      ssh_options_set(ssh, SSH_OPTIONS_HOST, config->host) != SSH_OK ||
      ssh_options_set(ssh, SSH_OPTIONS_PORT, &port) != SSH_OK ||
      ssh_options_set(ssh, SSH_OPTIONS_USER, config->user) != SSH_OK ||
      ssh_options_set(ssh, SSH_OPTIONS_SSH_DIR, config->ssh_dir) != SSH_OK ||
      ssh_options_set(ssh, SSH_OPTIONS_KNOWNHOSTS, config->known_hosts) != SSH_OK ||
      ssh_options_set(ssh, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, config->global_known_hosts) !=
          SSH_OK ||
      ssh_options_set(ssh, SSH_OPTIONS_TIMEOUT, &timeout) != SSH_OK ||
      (config->ciphers != NULL &&
       (ssh_options_set(ssh, SSH_OPTIONS_CIPHERS_C_S, config->ciphers) != SSH_OK ||
        ssh_options_set(ssh, SSH_OPTIONS_CIPHERS_S_C, config->ciphers) != SSH_OK)) ||
      ssh_options_set(ssh, SSH_OPTIONS_FD, &fd) != SSH_OK) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "Cannot configure the SSH session: %s",
                ssh_get_error(ssh));
    return FALSE;
  }
  return TRUE;
}

static gboolean
read_exactly(int fd, guint8 *buffer, gsize size)
{
  gsize done = 0;

  while (done < size) {
    ssize_t n = recv(fd, buffer + done, size - done, 0);

    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return FALSE; /* closed, or SO_RCVTIMEO ran out */
    done += n;
  }
  return TRUE;
}

/* How many keys the agent offers (SSH2_AGENTC_REQUEST_IDENTITIES), its
 * whole answer read so that libssh finds the connection as it was; -1 when
 * it cannot be told. An agent restarted without keys is not a server
 * refusing them: the first is waited for, the second is final. */
static int
agent_key_count(int fd)
{
  static const guint8 request[] = { 0, 0, 0, 1, 11 };
  guint8 header[9], rest[4096];
  guint32 length, keys;

  if (send(fd, request, sizeof request, MSG_NOSIGNAL) != sizeof request ||
      !read_exactly(fd, header, sizeof header))
    return -1;
  length = (guint32)header[0] << 24 | (guint32)header[1] << 16 | (guint32)header[2] << 8 |
           header[3];
  keys = (guint32)header[5] << 24 | (guint32)header[6] << 16 | (guint32)header[7] << 8 |
         header[8];
  if (length < 5 || length > AGENT_ANSWER_MAX_BYTES || header[4] != 12)
    return -1;
  for (guint32 left = length - 5; left > 0;) {
    gsize n = MIN(left, sizeof rest);

    if (!read_exactly(fd, rest, n))
      return -1;
    left -= n;
  }
  return keys > 0 ? (int)MIN(keys, G_MAXINT) : 0;
}

static gboolean
authenticate(TgSession *session, GError **error)
{
  TgSessionConfig *config = session->config;
  ssh_session ssh = session->ssh;
  gboolean using_agent = session->agent_fd >= 0;
  int rc = ssh_userauth_none(ssh, NULL);

  if (rc == SSH_AUTH_SUCCESS)
    return TRUE;
  if (rc == SSH_AUTH_ERROR)
    goto failed;
  if (using_agent && agent_key_count(session->agent_fd) == 0) {
    session->credentials_unreachable = TRUE;
    g_set_error(error, TG_ERROR, TG_ERROR_AUTHENTICATION_FAILED,
                "The ssh-agent holds no keys to log in to %s as %s (add yours with "
                "ssh-add)",
                config->host, config->user);
    return FALSE;
  }
  if (using_agent) {
    /* libssh owns (and closes) the agent socket from here on */
    ssh_set_agent_socket(ssh, g_steal_fd(&session->agent_fd));
    rc = ssh_userauth_agent(ssh, NULL);
  } else {
    rc = ssh_userauth_publickey(ssh, NULL, session->identity);
  }
  if (rc == SSH_AUTH_SUCCESS)
    return TRUE;
  if (rc == SSH_AUTH_PARTIAL) {
    g_set_error(error, TG_ERROR, TG_ERROR_AUTHENTICATION_FAILED,
                "%s@%s accepted the key but asks for more authentication (e.g. a "
                "second factor), which tunnelgate cannot give",
                config->user, config->host);
    return FALSE;
  }
failed:
  g_set_error(error, TG_ERROR, TG_ERROR_AUTHENTICATION_FAILED,
              "%s refused the %s for user %s%s%s", config->host,
              using_agent ? "keys in the ssh-agent" : "identity key", config->user,
              rc == SSH_AUTH_ERROR ? ": " : "",
              rc == SSH_AUTH_ERROR ? ssh_get_error(ssh) : "");
  return FALSE;
}

/* TCP keepalive and a user timeout, so that a server that vanished without
 * a word is noticed, not waited for forever. */
static void
set_keepalive(int fd, guint seconds, guint probes)
{
  int one = 1, count = (int)probes, idle = seconds;
  /* only for writes stuck where the relay loop cannot look (inside libssh):
   * well after the keepalive (and a network check) would have noticed, so
   * that the kernel does not abort the connection first, which would leave
   * nothing to reset and the server holding the session */
  unsigned int user_timeout = (2 * seconds * count + TG_SESSION_CHECK_SECONDS) * 1000;

  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
}

static gboolean
connect_session(TgSession *session, GError **error)
{
  TgSessionConfig *config = session->config;
  int fd;

  session->credentials_unreachable = FALSE;
  if (!load_credentials(session, error))
    return FALSE;
  fd = connect_tcp(session, error);
  if (fd < 0)
    return FALSE;
  if (config->keepalive_seconds > 0)
    set_keepalive(fd, config->keepalive_seconds, MAX(config->keepalive_count, 1));
  else
    set_keepalive(fd, 60, 3);

  session->ssh = ssh_new();
  if (session->ssh == NULL || !configure_ssh(session, fd, error)) {
    close(fd);
    return FALSE;
  }
  /* libssh owns fd from here on (and 0.10 closes it on some errors) */
  add_cancel_fd(session, fd);

  if (stop_requested(session)) {
    close(fd); /* libssh takes the socket only in ssh_connect() */
    g_set_error(error, TG_ERROR, TG_ERROR_CONNECT_FAILED,
                "SSH handshake with %s port %u: cancelled", config->host, config->port);
    return FALSE;
  }
  if (ssh_connect(session->ssh) != SSH_OK) {
    g_set_error(error, TG_ERROR, TG_ERROR_CONNECT_FAILED,
                "SSH handshake with %s port %u failed: %s", config->host, config->port,
                ssh_get_error(session->ssh));
    return FALSE;
  }
  if (!tg_hostkey_verify(session->ssh, config->host, config->host_key,
                         config->host_key_mode, error))
    return FALSE;
  /* the cancel descriptors stay until the end: a send() blocked on a stalled
   * server (libssh's socket is blocking) is cut by tg_session_stop() too */
  return authenticate(session, error);
}

/* ---- the relay loop ---- */

static gboolean
take_connection(TgUsage *usage)
{
  guint max = atomic_load(&usage->max_connections);
  guint now = atomic_fetch_add(&usage->connections, 1);

  if (max == G_MAXUINT || now < max)
    return TRUE;
  atomic_fetch_sub(&usage->connections, 1);
  return FALSE;
}

/* MaxConnections counts a user's connections over all their tunnels,
 * MaxBuffered the bytes their relays' buffers may hold (TG_RELAY_BUFFER_BYTES
 * each), and the DaemonMax... ones the same for everyone. TRUE: all four
 * are taken; otherwise none is, and *refused says which limit refused. */
static gboolean
take_connection_slot(TgSession *session, TgPolicyLimitKind *refused)
{
  TgUsage *user = session->usage, *daemon = session->daemon_usage;

  if (!take_connection(user)) {
    *refused = TG_POLICY_MAX_CONNECTIONS;
    return FALSE;
  }
  if (!take_connection(daemon)) {
    *refused = TG_POLICY_DAEMON_MAX_CONNECTIONS;
    goto no_daemon_connection;
  }
  if (!tg_usage_take(&user->buffered, atomic_load(&user->max_buffered),
                     TG_RELAY_BUFFER_BYTES)) {
    *refused = TG_POLICY_MAX_BUFFERED;
    goto no_buffer;
  }
  if (!tg_usage_take(&daemon->buffered, atomic_load(&daemon->max_buffered),
                     TG_RELAY_BUFFER_BYTES)) {
    *refused = TG_POLICY_DAEMON_MAX_BUFFERED;
    atomic_fetch_sub(&user->buffered, TG_RELAY_BUFFER_BYTES);
    goto no_buffer;
  }
  return TRUE;

no_buffer:
  atomic_fetch_sub(&daemon->connections, 1);
no_daemon_connection:
  atomic_fetch_sub(&user->connections, 1);
  return FALSE;
}

static void
release_connection_slot(TgSession *session)
{
  atomic_fetch_sub(&session->usage->connections, 1);
  atomic_fetch_sub(&session->daemon_usage->connections, 1);
  atomic_fetch_sub(&session->usage->buffered, TG_RELAY_BUFFER_BYTES);
  atomic_fetch_sub(&session->daemon_usage->buffered, TG_RELAY_BUFFER_BYTES);
}

static void
peer_text(const struct sockaddr_storage *peer, char *address, gsize size, guint16 *port)
{
  if (peer->ss_family == AF_INET) {
    inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, address, size);
    *port = ntohs(((const struct sockaddr_in *)peer)->sin_port);
  } else if (peer->ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, address, size);
    *port = ntohs(((const struct sockaddr_in6 *)peer)->sin6_port);
  }
}

/* One more connection for @forward (accepted on a listener, or @forwarded
 * by the server): the owner's MaxConnections slot and this tunnel's own
 * bound, each refusal audited. TRUE: it holds a slot now. */
static gboolean
admit_connection(TgSession *session, const TgForward *forward, gboolean forwarded)
{
  TgSessionConfig *config = session->config;

  TgPolicyLimitKind refused;

  if (!take_connection_slot(session, &refused)) {
    g_autofree char *uid = g_strdup_printf("%u", (unsigned)config->owner.uid);
    g_autofree char *rule = NULL;
    g_autofree char *value = NULL;
    TgPolicyLimit limit;
    gboolean daemon_wide = refused == TG_POLICY_DAEMON_MAX_CONNECTIONS ||
                           refused == TG_POLICY_DAEMON_MAX_BUFFERED;

    g_mutex_lock(&session->lock);
    tg_policy_get_limit(config->policy, config->subject, refused, &limit);
    rule = g_strdup_printf("%s:%u %s", limit.origin.file, limit.origin.line,
                           limit.origin.keyword);
    value = g_strdup_printf("%s %" G_GUINT64_FORMAT " (%s:%u)", limit.origin.keyword,
                            limit.value, limit.origin.file, limit.origin.line);
    g_mutex_unlock(&session->lock);
    tg_log_event(daemon_wide ? G_LOG_LEVEL_WARNING : G_LOG_LEVEL_MESSAGE,
                 "CONNECTION_REFUSED", "TUNNEL_ID", config->tunnel_id, "USER",
                 config->owner.user_name, "UID", uid, "FORWARD", forward->spec,
                 "DECISION", "deny", "RULE", rule, "MESSAGE",
                 "tunnel %s: %s has reached %s, refusing a %s connection",
                 config->tunnel_id, daemon_wide ? "the daemon" : config->owner.user_name,
                 value, forwarded ? "forwarded" : "new");
    return FALSE;
  }
  if (session->relays->len >= MAX_CONNECTIONS_PER_TUNNEL) {
    tg_log_event(G_LOG_LEVEL_WARNING, "CONNECTION_REFUSED", "TUNNEL_ID",
                 config->tunnel_id, "FORWARD", forward->spec, "MESSAGE",
                 "tunnel %s: more than %d connections, refusing a %s one",
                 config->tunnel_id, MAX_CONNECTIONS_PER_TUNNEL,
                 forwarded ? "forwarded" : "new");
    release_connection_slot(session);
    return FALSE;
  }
  return TRUE;
}

/* An admitted connection's relay joins the loop: counted and audited. */
static void
add_relay(TgSession *session, TgRelay *relay, const TgForward *forward,
          gboolean forwarded, const char *peer, int port)
{
  TgSessionConfig *config = session->config;

  g_ptr_array_add(session->relays, relay);
  tg_counter_add(&session->counters->total_connections, 1);
  atomic_fetch_add(&session->counters->active_connections, 1);
  tg_log_event(G_LOG_LEVEL_MESSAGE, "CONNECTION_OPENED", "TUNNEL_ID", config->tunnel_id,
               "USER", config->owner.user_name, "FORWARD", forward->spec, "MESSAGE",
               "tunnel %s: %sconnection from %s port %d for %s", config->tunnel_id,
               forwarded ? "forwarded " : "", peer, port, forward->spec);
}

/* Out of descriptors (or memory): the pending connection stays in the
 * backlog and the listener readable, so polling it again at once would
 * spin. Its listeners rest for a while; new connections wait meanwhile. */
static void
pause_accepting(TgSession *session, const TgForward *forward, int error_number)
{
  gint64 now = g_get_monotonic_time();

  session->accept_paused_until = now + ACCEPT_PAUSE_USEC;
  if (now - session->accept_pause_logged >= ACCEPT_PAUSE_LOG_USEC) {
    session->accept_pause_logged = now;
    tg_log_event(G_LOG_LEVEL_WARNING, "ACCEPT_PAUSED", "TUNNEL_ID",
                 session->config->tunnel_id, "USER", session->config->owner.user_name,
                 "FORWARD", forward->spec, "MESSAGE",
                 "tunnel %s: cannot accept a connection for %s: %s; new connections "
                 "wait (retried every %d ms)",
                 session->config->tunnel_id, forward->spec, g_strerror(error_number),
                 (int)(ACCEPT_PAUSE_USEC / 1000));
  }
}

/* ListenerUsers on accept: a connection from a socket of this host passes
 * if its owner is root or one the listener allows. The firewall resets the
 * others before the handshake; this holds without it. A peer the kernel
 * cannot tell about is refused (fail closed). */
static gboolean
peer_user_allowed(TgSession *session, const TgListener *listener,
                  const TgForward *forward, int fd)
{
  TgSessionConfig *config = session->config;
  g_autoptr(GError) error = NULL;
  g_autofree char *uid_text = NULL;
  g_autofree char *name = NULL;
  TgPeerKind kind;
  uid_t uid = 0;

  if (!tg_peer_owner(fd, &session->diag_fd, &kind, &uid, &error)) {
    tg_log_event(G_LOG_LEVEL_WARNING, "CONNECTION_REFUSED", "TUNNEL_ID",
                 config->tunnel_id, "USER", config->owner.user_name, "FORWARD",
                 forward->spec, "DECISION", "deny", "RULE", "ListenerUsers", "MESSAGE",
                 "tunnel %s: refusing a connection to %s: %s", config->tunnel_id,
                 forward->spec, error->message);
    return FALSE;
  }
  if (kind == TG_PEER_REMOTE)
    return TRUE; /* another host: ListenerSources decides */
  if (kind == TG_PEER_GONE)
    return FALSE;
  if (uid == 0)
    return TRUE;
  for (guint i = 0; i < listener->allowed_uids->len; i++)
    if (g_array_index(listener->allowed_uids, guint32, i) == uid)
      return TRUE;
  uid_text = g_strdup_printf("%u", (unsigned)uid);
  name = tg_accounts_name_of(uid);
  if (name == NULL)
    name = g_strdup("?");
  tg_log_event(G_LOG_LEVEL_MESSAGE, "CONNECTION_REFUSED", "TUNNEL_ID", config->tunnel_id,
               "USER", config->owner.user_name, "FORWARD", forward->spec, "PEER_UID",
               uid_text, "PEER_USER", name, "DECISION", "deny", "RULE", "ListenerUsers",
               "MESSAGE",
               "tunnel %s: refusing a connection from uid %s (%s) to %s: the listener is "
               "%s's (ListenerUsers)",
               config->tunnel_id, uid_text, name, forward->spec, config->owner.user_name);
  return FALSE;
}

/* An admitted connection gets its relay (the session is up). */
static void
serve_connection(TgSession *session, guint forward_index, int fd, const char *address,
                 guint16 port)
{
  const TgForward *forward = g_ptr_array_index(session->config->forwards, forward_index);
  TgRelay *relay;

  if (forward->kind == TG_FORWARD_DYNAMIC)
    relay = tg_relay_new_socks(session->ssh, forward_index, fd, address, port,
                               g_get_monotonic_time() +
                                   SOCKS_HANDSHAKE_SECONDS * G_USEC_PER_SEC);
  else if (forward->connect.path != NULL)
    relay = tg_relay_new_unix_target(session->ssh, forward_index, fd,
                                     forward->connect.path, address, port);
  else
    relay = tg_relay_new(session->ssh, forward_index, fd, forward->connect.host,
                         forward->connect.port, address, port);
  add_relay(session, relay, forward, FALSE, address, port);
}

/* A held connection the session did not come back for: reset (not a clean
 * end of stream, which a client could take for a complete answer), its
 * slot given back, and said. */
static void
refuse_held(TgSession *session, const HeldConnection *held, const char *why)
{
  TgSessionConfig *config = session->config;
  const TgForward *forward = g_ptr_array_index(config->forwards, held->forward_index);
  struct linger reset = { .l_onoff = 1, .l_linger = 0 };

  tg_log_event(G_LOG_LEVEL_MESSAGE, "CONNECTION_REFUSED", "TUNNEL_ID", config->tunnel_id,
               "USER", config->owner.user_name, "FORWARD", forward->spec, "MESSAGE",
               "tunnel %s: refusing a connection from %s port %u to %s: %s",
               config->tunnel_id, held->address, held->port, forward->spec, why);
  setsockopt(held->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  close(held->fd);
  release_connection_slot(session);
}

/* While the session is down, a new connection waits for it (bounded in
 * time and number) instead of being refused at once: a blip of the
 * network costs the client a delay, not an error. */
static void
hold_connection(TgSession *session, guint forward_index, int fd, const char *address,
                guint16 port)
{
  HeldConnection held = { .fd = fd, .forward_index = forward_index, .port = port };

  g_strlcpy(held.address, address, sizeof held.address);
  if (session->held->len >= MAX_HELD) {
    refuse_held(session, &held,
                "the tunnel is reconnecting and already holds " G_STRINGIFY(
                    MAX_HELD) " waiting connections");
    return;
  }
  held.until = g_get_monotonic_time() + HOLD_SECONDS * G_USEC_PER_SEC;
  g_array_append_val(session->held, held);
}

/* Held connections of @forward_index (G_MAXUINT: all) whose time is up at
 * @now (0: all of them) are refused. */
static void
expire_held(TgSession *session, guint forward_index, gint64 now, const char *why)
{
  for (guint i = session->held->len; i-- > 0;) {
    HeldConnection *held = &g_array_index(session->held, HeldConnection, i);

    if ((forward_index == G_MAXUINT || held->forward_index == forward_index) &&
        (now == 0 || held->until <= now)) {
      refuse_held(session, held, why);
      g_array_remove_index(session->held, i);
    }
  }
}

static void
serve_held(TgSession *session)
{
  for (guint i = 0; i < session->held->len; i++) {
    HeldConnection *held = &g_array_index(session->held, HeldConnection, i);
    serve_connection(session, held->forward_index, held->fd, held->address, held->port);
  }
  g_array_set_size(session->held, 0);
}

static void
accept_connections(TgSession *session, TgListener *listener)
{
  TgSessionConfig *config = session->config;
  const TgForward *forward = g_ptr_array_index(config->forwards, listener->forward_index);

  for (int i = 0; i < ACCEPTS_PER_ROUND; i++) {
    struct sockaddr_storage peer;
    socklen_t length = sizeof peer;
    char address[INET6_ADDRSTRLEN] = "";
    guint16 port = 0;
    int one = 1;
    int fd = accept4(listener->fd, (struct sockaddr *)&peer, &length,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
        pause_accepting(session, forward, errno);
      return; /* EAGAIN, or a connection that went away before accept */
    }
    if (!tg_listener_allows_peer(listener, &peer)) {
      /* the firewall's listener guard normally stops these before the
       * handshake; this holds without it (guard off, or not yet in place) */
      peer_text(&peer, address, sizeof address, &port);
      tg_log_event(G_LOG_LEVEL_MESSAGE, "CONNECTION_REFUSED", "TUNNEL_ID",
                   config->tunnel_id, "USER", config->owner.user_name, "FORWARD",
                   forward->spec, "DECISION", "deny", "RULE", "ListenerSources",
                   "MESSAGE",
                   "tunnel %s: refusing a connection from %s port %u to %s: not an "
                   "allowed source (ListenerSources)",
                   config->tunnel_id, address, port, forward->spec);
      close(fd);
      continue;
    }
    if (listener->allowed_uids != NULL &&
        !peer_user_allowed(session, listener, forward, fd)) {
      close(fd);
      continue;
    }
    if (!admit_connection(session, forward, FALSE)) {
      close(fd);
      continue;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    peer_text(&peer, address, sizeof address, &port);
    if (peer.ss_family == AF_UNIX) {
      g_strlcpy(address, "127.0.0.1", sizeof address); /* as OpenSSH names them */
      port = 0;
    }
    if (session->up)
      serve_connection(session, listener->forward_index, fd, address, port);
    else
      hold_connection(session, listener->forward_index, fd, address, port);
  }
}

/* One audit event per forwarded connection, when it ends. */
static void
relay_finish(TgSession *session, guint index, TgRelayStatus status)
{
  TgSessionConfig *config = session->config;
  TgRelay *relay = g_ptr_array_index(session->relays, index);
  guint64 sent, received;
  char bytes[64];

  tg_relay_get_bytes(relay, &sent, &received);
  g_snprintf(bytes, sizeof bytes, "%" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT, sent,
             received);
  tg_log_event(G_LOG_LEVEL_MESSAGE, "CONNECTION_CLOSED", "TUNNEL_ID", config->tunnel_id,
               "USER", config->owner.user_name, "PEER", tg_relay_peer(relay),
               "DESTINATION", tg_relay_destination(relay), "BYTES", bytes, "RESULT",
               status == TG_RELAY_DONE ? "done" : "failed", "MESSAGE",
               "tunnel %s: connection from %s to %s ended (%s), %s bytes sent/received",
               config->tunnel_id, tg_relay_peer(relay), tg_relay_destination(relay),
               status == TG_RELAY_DONE           ? "done"
               : tg_relay_failure(relay) != NULL ? tg_relay_failure(relay)
                                                 : "closed by the daemon",
               bytes);
  g_ptr_array_remove_index_fast(session->relays, index);
  atomic_fetch_sub(&session->counters->active_connections, 1);
  release_connection_slot(session);
}

/* ---- dynamic (D) forwards ---- */

void
tg_session_set_policy(TgSession *session, TgPolicy *policy,
                      const TgPolicySubject *subject)
{
  TgPolicySubject *copy = tg_policy_subject_copy(subject);

  g_mutex_lock(&session->lock);
  tg_policy_ref(policy);
  if (session->config->policy != NULL)
    tg_policy_unref(session->config->policy);
  session->config->policy = policy;
  tg_policy_subject_free(session->config->subject);
  session->config->subject = copy;
  g_mutex_unlock(&session->lock);
}

/* A SOCKS client's destination, checked like PermitOpen for the owner with
 * the policy in force now; a denial gets SOCKS's "not allowed by ruleset"
 * and is logged like every decision. */
static TgRelayStatus
socks_decide(TgSession *session, TgRelay *relay, gboolean ssh_output_queued)
{
  TgSessionConfig *config = session->config;
  const TgForward *forward =
      g_ptr_array_index(config->forwards, tg_relay_forward_index(relay));
  const char *host = tg_relay_socks_host(relay);
  guint16 port = tg_relay_socks_port(relay);
  g_autofree char *what =
      g_strdup_printf("SOCKS %s port %u via '%s'", host, port, forward->spec);
  g_autoptr(TgPolicyDecision) decision = NULL;

  /* the policy and the owner a reload may replace: under the lock */
  g_mutex_lock(&session->lock);
  decision =
      tg_policy_check_socks_destination(config->policy, config->subject, host, port);
  tg_policy_log_decision(config->subject, config->tunnel_id, what, decision);
  g_mutex_unlock(&session->lock);
  if (!decision->allowed)
    return tg_relay_socks_deny(relay, TG_SOCKS_NOT_ALLOWED, decision->reason);
  tg_relay_socks_allow(relay);
  return tg_relay_pump(relay, 0, ssh_output_queued, session->counters);
}

/* ---- keepalive ---- */

/* A question the server must answer (keepalive@openssh.com, want-reply),
 * without waiting for the answer: any packet from the server counts as one
 * (last_heard). libssh 0.10 keeps one global request state per session,
 * which a keepalive leaves pending (non-blocking) and its answer leaves
 * "answered" until the next global request call, which then only resets it
 * (and returns the old answer as its own). So: one call resets an answered
 * question, a second one asks anew; with the first still unanswered both
 * just find it pending. Either way exactly one question is in flight, and
 * settle_probe() clears it before a request whose answer matters. */
static void
send_probe(TgSession *session)
{
  ssh_send_keepalive(session->ssh);
  if (session->probe_in_flight)
    ssh_send_keepalive(session->ssh);
  session->probe_in_flight = TRUE;
  session->last_probe = g_get_monotonic_time();
}

/* Before tcpip-forward or its cancellation, in blocking mode: waits for the
 * keepalive's answer (at most the session timeout) and resets the state,
 * so that the answer read next is the request's own. */
static void
settle_probe(TgSession *session)
{
  if (!session->probe_in_flight)
    return;
  ssh_send_keepalive(session->ssh);
  session->probe_in_flight = FALSE;
}

/* ---- remote (R) forwards ---- */

static const TgConnectBack *
find_connect_back(TgSession *session, guint forward_index)
{
  for (guint i = 0; i < session->config->connect_backs->len; i++) {
    const TgConnectBack *connect_back =
        g_ptr_array_index(session->config->connect_backs, i);
    if (connect_back->forward_index == forward_index)
      return connect_back;
  }
  return NULL;
}

static RemoteListen *
find_remote_by_port(TgSession *session, int port)
{
  for (guint i = 0; i < session->remotes->len; i++) {
    RemoteListen *remote = &g_array_index(session->remotes, RemoteListen, i);
    if (remote->active && remote->port == port)
      return remote;
  }
  return NULL;
}

/* No channel is open or can arrive: the next packet after a global
 * request's answer cannot be anything but what we ask for. */
static gboolean
session_is_quiet(TgSession *session)
{
  if (session->relays->len > 0)
    return FALSE;
  for (guint i = 0; i < session->remotes->len; i++) {
    if (g_array_index(session->remotes, RemoteListen, i).active)
      return FALSE;
  }
  return TRUE;
}

/* Asks the server to listen (tcpip-forward) and waits for its answer, at
 * most the session timeout; packets that arrive meanwhile are processed as
 * usual. No bind address means "localhost", as OpenSSH sends it: an empty
 * one (what libssh sends for NULL) would mean every interface. */
static gboolean
request_listen(TgSession *session, guint forward_index, GError **error)
{
  TgSessionConfig *config = session->config;
  const TgForward *forward = g_ptr_array_index(config->forwards, forward_index);
  RemoteListen remote = { .forward_index = forward_index, .active = TRUE };
  const char *host = forward->listen.host;
  int bound = 0, rc, blocking = ssh_is_blocking(session->ssh);

  if (host == NULL)
    host = "localhost";
  else if (g_str_equal(host, "*"))
    host = "";
  g_strlcpy(remote.address, host, sizeof remote.address);
  ssh_set_blocking(session->ssh, 1);
  settle_probe(session);
  if (forward->listen.port == 0 && !session_is_quiet(session)) {
    /* libssh 0.10 reads the port the server chose from the last packet it
     * received, which is another one when traffic arrives with the answer
     * (its "no guarantee the last packet we received contains that info"):
     * on a busy session the daemon picks a free-looking port itself and
     * asks for that one, trying a few. */
    rc = SSH_ERROR;
    for (int attempt = 0; attempt < RANDOM_PORT_ATTEMPTS && rc != SSH_OK; attempt++) {
      bound = g_random_int_range(FIRST_RANDOM_PORT, LAST_RANDOM_PORT + 1);
      rc = ssh_channel_listen_forward(session->ssh, host, bound, NULL);
    }
  } else {
    rc = ssh_channel_listen_forward(session->ssh, host, forward->listen.port, &bound);
  }
  ssh_set_blocking(session->ssh, blocking);
  if (rc != SSH_OK || (forward->listen.port == 0 && (bound <= 0 || bound > 65535))) {
    g_set_error(
        error, TG_ERROR, TG_ERROR_FAILED,
        "Forward '%s': %s refused to listen on %s port %u (its AllowTcpForwarding, "
        "PermitListen or GatewayPorts forbid it, or the port is in use)%s%s",
        forward->spec, config->host, host[0] != '\0' ? host : "*", forward->listen.port,
        rc == SSH_ERROR ? ": " : "", rc == SSH_ERROR ? ssh_get_error(session->ssh) : "");
    return FALSE;
  }
  remote.port = forward->listen.port != 0 ? forward->listen.port : (guint16)bound;
  g_array_append_val(session->remotes, remote);
  report_listener(session, forward_index,
                  remote.address[0] != '\0' ? remote.address : "*", remote.port);
  tg_log_event(G_LOG_LEVEL_MESSAGE, "REMOTE_LISTEN", "TUNNEL_ID", config->tunnel_id,
               "USER", config->owner.user_name, "FORWARD", forward->spec, "MESSAGE",
               "tunnel %s: %s listens on %s port %u for %s", config->tunnel_id,
               config->host, host[0] != '\0' ? host : "*", remote.port, forward->spec);
  return TRUE;
}

static void
cancel_listen(TgSession *session, guint forward_index)
{
  for (guint i = 0; i < session->remotes->len; i++) {
    RemoteListen *remote = &g_array_index(session->remotes, RemoteListen, i);
    int blocking;

    if (remote->forward_index != forward_index || !remote->active)
      continue;
    remote->active = FALSE; /* channels for it are refused from now on */
    blocking = ssh_is_blocking(session->ssh);
    ssh_set_blocking(session->ssh, 1);
    settle_probe(session);
    ssh_channel_cancel_forward(session->ssh, remote->address, remote->port);
    ssh_set_blocking(session->ssh, blocking);
  }
}

/* A connect-back socket: marked for the firewall's pinning, connecting
 * (non-blocking) to the first of the forward's addresses. */
static int
connect_back(TgSession *session, const TgConnectBack *connect_back, GError **error)
{
  TgSessionConfig *config = session->config;
  int last_error = EHOSTUNREACH;

  for (guint i = 0; i < connect_back->addresses->len; i++) {
    const struct sockaddr_storage *address =
        &g_array_index(connect_back->addresses, struct sockaddr_storage, i);
    socklen_t length = address->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                     : sizeof(struct sockaddr_in6);
    int fd = marked_tcp_socket(address->ss_family, config->connect_back_mark);

    if (fd < 0) {
      last_error = errno;
      continue;
    }
    if (connect(fd, (const struct sockaddr *)address, length) == 0 ||
        errno == EINPROGRESS)
      return fd;
    last_error = errno;
    close(fd);
  }
  g_set_error(error, TG_ERROR, TG_ERROR_CONNECT_FAILED, "%s", g_strerror(last_error));
  return -1;
}

/* libssh hands every request it does not handle itself to this, in the
 * worker thread while it processes packets. A forwarded-tcpip channel for a
 * port the daemon asked for gets a connect-back relay; any other channel
 * open is refused (SSH_MSG_CHANNEL_OPEN_FAILURE), as is anything else that
 * wants a reply. Returns 1 for "reply with the default refusal". */
/* What a server says about itself goes to the log as printable ASCII, at
 * most @size - 1 bytes: no line breaks or terminal escapes from a peer. */
static void
printable_copy(const char *text, char *out, gsize size)
{
  gsize i = 0;

  for (; text != NULL && text[i] != '\0' && i + 1 < size; i++)
    out[i] = g_ascii_isprint(text[i]) ? text[i] : '?';
  out[i] = '\0';
}

static int
on_ssh_message(ssh_session ssh, ssh_message message, void *user_data)
{
  TgSession *session = user_data;
  TgSessionConfig *config = session->config;
  char originator[INET6_ADDRSTRLEN + 16];
  int port, originator_port;
  RemoteListen *remote;
  const TgConnectBack *target;
  const TgForward *forward;
  g_autoptr(GError) error = NULL;
  ssh_channel channel;
  int fd;

  if (ssh_message_type(message) != SSH_REQUEST_CHANNEL_OPEN)
    return 1;
  if (ssh_message_subtype(message) != SSH_CHANNEL_FORWARDED_TCPIP) {
    tg_log_event(G_LOG_LEVEL_WARNING, "CHANNEL_REFUSED", "TUNNEL_ID", config->tunnel_id,
                 "MESSAGE", "tunnel %s: refusing a channel of type %d the server opened",
                 config->tunnel_id, ssh_message_subtype(message));
    return 1;
  }
  port = ssh_message_channel_request_open_destination_port(message);
  printable_copy(ssh_message_channel_request_open_originator(message), originator,
                 sizeof originator);
  if (originator[0] == '\0')
    g_strlcpy(originator, "?", sizeof originator);
  originator_port = ssh_message_channel_request_open_originator_port(message);
  remote = find_remote_by_port(session, port);
  target = remote != NULL ? find_connect_back(session, remote->forward_index) : NULL;
  if (target == NULL) {
    tg_log_event(
        G_LOG_LEVEL_WARNING, "CHANNEL_REFUSED", "TUNNEL_ID", config->tunnel_id, "PEER",
        originator, "MESSAGE",
        "tunnel %s: refusing a forwarded connection from %s port %d for port %d, "
        "which the daemon did not ask the server to listen on",
        config->tunnel_id, originator, originator_port, port);
    return 1;
  }
  forward = g_ptr_array_index(config->forwards, remote->forward_index);
  if (!admit_connection(session, forward, TRUE))
    return 1;
  fd = connect_back(session, target, &error);
  if (fd < 0) {
    tg_log_event(G_LOG_LEVEL_MESSAGE, "CONNECTION_FAILED", "TUNNEL_ID", config->tunnel_id,
                 "FORWARD", forward->spec, "MESSAGE",
                 "tunnel %s: cannot connect to %s port %u for %s: %s", config->tunnel_id,
                 forward->connect.host, forward->connect.port, forward->spec,
                 error->message);
    release_connection_slot(session);
    return 1;
  }
  channel = ssh_message_channel_request_open_reply_accept(message);
  if (channel == NULL) {
    close(fd);
    release_connection_slot(session);
    return 1;
  }
  add_relay(session,
            tg_relay_new_connect_back(channel, remote->forward_index, fd,
                                      forward->connect.host, forward->connect.port,
                                      originator, (guint16)originator_port),
            forward, TRUE, originator, originator_port);
  return 0;
}

/* L local_socket:...: the socket file is created here, as the owner (a
 * child process; this thread may block, the D-Bus thread may not). */
static gboolean
bind_unix_listener(TgSession *session, guint forward_index, GError **error)
{
  const TgForward *forward = g_ptr_array_index(session->config->forwards, forward_index);
  int view_fd = view(session, error);
  TgListener *listener =
      view_fd < 0 ? NULL
                  : tg_listener_bind_unix(forward, forward_index, &session->config->owner,
                                          view_fd, error);

  if (listener == NULL) {
    if (view_fd < 0)
      g_prefix_error(error, "Forward '%s': ", forward->spec);
    return FALSE;
  }
  g_ptr_array_add(session->config->listeners, listener);
  report_listener(session, forward_index, listener->path, 0);
  return TRUE;
}

static gboolean session_alive(TgSession *session, GError **error);

static gboolean
forward_removed(TgSession *session, guint forward_index)
{
  return forward_index < session->removed->len &&
         g_array_index(session->removed, gboolean, forward_index);
}

static gboolean
has_listener(TgSession *session, guint forward_index)
{
  for (guint i = 0; i < session->config->listeners->len; i++) {
    if (((TgListener *)g_ptr_array_index(session->config->listeners, i))->forward_index ==
        forward_index)
      return TRUE;
  }
  return FALSE;
}

/* After a reconnect, a fixed port the server will not give yet: its old
 * session may linger (a path that died silently leaves it until its own
 * timeout), so it is asked for again until it is free. */
static void
defer_listen(TgSession *session, guint forward_index, const GError *error)
{
  const TgForward *forward = g_ptr_array_index(session->config->forwards, forward_index);
  PendingListen pending = { .forward_index = forward_index,
                            .next_try = g_get_monotonic_time() + G_USEC_PER_SEC,
                            .tries = 1 };

  g_array_append_val(session->pending_listens, pending);
  tg_log_event(G_LOG_LEVEL_WARNING, "REMOTE_LISTEN_PENDING", "TUNNEL_ID",
               session->config->tunnel_id, "USER", session->config->owner.user_name,
               "FORWARD", forward->spec, "MESSAGE",
               "tunnel %s: %s; asking again until the server gives the port (up to "
               "every %d s)",
               session->config->tunnel_id, error->message, LISTEN_RETRY_MAX_SECONDS);
}

static void
retry_pending_listens(TgSession *session, gint64 now)
{
  for (guint i = session->pending_listens->len; i-- > 0;) {
    PendingListen *pending = &g_array_index(session->pending_listens, PendingListen, i);
    g_autoptr(GError) error = NULL;

    if (pending->next_try > now)
      continue;
    if (request_listen(session, pending->forward_index, &error)) {
      g_array_remove_index(session->pending_listens, i);
      continue;
    }
    pending->tries++;
    pending->next_try =
        now + MIN((gint64)1 << MIN(pending->tries - 1, 16), LISTEN_RETRY_MAX_SECONDS) *
                  G_USEC_PER_SEC;
  }
}

/* What the forwards need beyond what the D-Bus thread bound, before UP:
 * the server's listeners (R; asked for again after each reconnect) and the
 * Unix socket listeners (bound once, kept while reconnecting). */
static gboolean
start_forwards(TgSession *session, GError **error)
{
  ssh_set_message_callback(session->ssh, on_ssh_message, session);
  for (guint i = 0; i < session->config->forwards->len; i++) {
    const TgForward *forward = g_ptr_array_index(session->config->forwards, i);

    if (forward_removed(session, i))
      continue;
    if (forward->kind == TG_FORWARD_REMOTE) {
      g_autoptr(GError) refused = NULL;

      if (request_listen(session, i, &refused))
        continue;
      if (!session->was_up) {
        g_propagate_error(error, g_steal_pointer(&refused));
        return FALSE;
      }
      if (!session_alive(session, NULL)) {
        g_propagate_error(error, g_steal_pointer(&refused));
        return FALSE;
      }
      defer_listen(session, i, refused);
    }
    if (forward->kind == TG_FORWARD_LOCAL && forward->listen.path != NULL &&
        !has_listener(session, i) && !bind_unix_listener(session, i, error))
      return FALSE;
  }
  return TRUE;
}

/* Commands from the D-Bus thread: a forward to add (with its listeners,
 * bound there) or to take away. Each is acknowledged back in the D-Bus
 * thread once applied, so that a port is free when RemoveForward returns. */
typedef enum {
  COMMAND_ADD,
  COMMAND_REMOVE,
  COMMAND_READMITTED, /* tg_session_readmitted(): nobody to acknowledge */
} CommandKind;

typedef struct {
  TgSession *session; /* set when acknowledged */
  CommandKind kind;
  guint index;
  TgForward *forward;          /* add */
  GPtrArray *listeners;        /* add: TgListener* */
  TgConnectBack *connect_back; /* add, R */
  TgSessionDoneFunc done;
  gpointer done_data;
  gboolean applied;
  GError *error; /* not applied because the server refused; READMITTED: the
                  * refusal, or NULL */
} Command;

static gboolean
command_done_dispatch(gpointer data)
{
  Command *command = data;

  tg_text_error_printable(command->error);
  if (command->done != NULL)
    command->done(command->applied, command->error, command->done_data);
  g_atomic_int_dec_and_test(&command->session->pending_acks);
  return G_SOURCE_REMOVE;
}

static void
command_free(gpointer data)
{
  Command *command = data;

  tg_forward_free(command->forward);
  if (command->listeners != NULL)
    g_ptr_array_unref(command->listeners);
  tg_connect_back_free(command->connect_back);
  g_clear_error(&command->error);
  g_free(command);
}

static void
command_acknowledge(TgSession *session, Command *command)
{
  command->session = session;
  g_atomic_int_inc(&session->pending_acks);
  dispatch_later(session, command_done_dispatch, command, command_free);
}

static void
apply_command(TgSession *session, Command *command)
{
  TgSessionConfig *config = session->config;

  if (command->kind == COMMAND_ADD) {
    /* forward indexes are positions in config->forwards: keep them aligned */
    g_assert(command->index == config->forwards->len);
    g_ptr_array_add(config->forwards, g_steal_pointer(&command->forward));
    g_ptr_array_extend_and_steal(config->listeners, g_steal_pointer(&command->listeners));
    const TgForward *forward = g_ptr_array_index(config->forwards, command->index);

    if (command->connect_back != NULL) {
      g_ptr_array_add(config->connect_backs, g_steal_pointer(&command->connect_back));
      /* while down, the server is asked when the session is back */
      if (session->up && !request_listen(session, command->index, &command->error))
        return; /* not applied: the D-Bus thread takes the forward back */
    }
    if (forward->kind == TG_FORWARD_LOCAL && forward->listen.path != NULL &&
        !bind_unix_listener(session, command->index, &command->error))
      return;
  } else {
    const TgForward *forward = g_ptr_array_index(config->forwards, command->index);

    if (command->index >= session->removed->len)
      g_array_set_size(session->removed, command->index + 1);
    g_array_index(session->removed, gboolean, command->index) = TRUE;
    if (forward->kind == TG_FORWARD_REMOTE && session->up)
      cancel_listen(session, command->index);
    for (guint i = session->pending_listens->len; i-- > 0;) {
      if (g_array_index(session->pending_listens, PendingListen, i).forward_index ==
          command->index)
        g_array_remove_index(session->pending_listens, i);
    }
    for (guint i = config->listeners->len; i-- > 0;) {
      if (((TgListener *)g_ptr_array_index(config->listeners, i))->forward_index ==
          command->index)
        g_ptr_array_remove_index(config->listeners, i); /* closes it */
    }
    for (guint i = session->relays->len; i-- > 0;) {
      if (tg_relay_forward_index(g_ptr_array_index(session->relays, i)) == command->index)
        relay_finish(session, i, TG_RELAY_FAILED);
    }
    expire_held(session, command->index, 0, "its forward was removed");
  }
  command->applied = TRUE;
}

/* Applies (or, when the session is ending, just acknowledges) every
 * queued command. */
static void
apply_commands(TgSession *session, gboolean apply)
{
  for (;;) {
    Command *command;

    g_mutex_lock(&session->lock);
    command = g_queue_pop_head(&session->commands);
    if (!apply)
      session->finished = TRUE;
    g_mutex_unlock(&session->lock);
    if (command == NULL)
      return;
    if (command->kind == COMMAND_READMITTED) {
      if (session->readmitting) {
        session->readmitted = TRUE;
        g_clear_error(&session->readmit_refusal);
        session->readmit_refusal = g_steal_pointer(&command->error);
      }
      command_free(command);
      continue;
    }
    if (apply)
      apply_command(session, command);
    command_acknowledge(session, command);
  }
}

/* Lays out the poll set: [0] wake, [1] SSH socket, listeners, relays. */
static nfds_t
build_pollfds(TgSession *session)
{
  GPtrArray *listeners = session->config->listeners;
  gsize needed = 2 + listeners->len + session->relays->len;
  int ssh_flags = ssh_get_poll_flags(session->ssh);
  gboolean room = session->relays->len < MAX_CONNECTIONS_PER_TUNNEL &&
                  g_get_monotonic_time() >= session->accept_paused_until;
  nfds_t n = 0;

  if (needed > session->pollfds_size) {
    session->pollfds_size = MAX(needed, session->pollfds_size * 2);
    session->pollfds = g_renew(struct pollfd, session->pollfds, session->pollfds_size);
  }
  session->pollfds[n++] = (struct pollfd){ .fd = session->wake_fd, .events = POLLIN };
  session->pollfds[n++] = (struct pollfd){
    .fd = ssh_get_fd(session->ssh),
    .events = POLLIN | ((ssh_flags & SSH_WRITE_PENDING) ? POLLOUT : 0),
  };
  for (guint i = 0; i < listeners->len; i++)
    session->pollfds[n++] = (struct pollfd){
      .fd = room ? ((TgListener *)g_ptr_array_index(listeners, i))->fd : -1,
      .events = POLLIN,
    };
  /* while libssh still has output queued, clients are not read: the session
   * socket is the bottleneck, and libssh's queue must not grow */
  gboolean ssh_output_queued = (ssh_get_status(session->ssh) & SSH_WRITE_PENDING) != 0;
  for (guint i = 0; i < session->relays->len; i++) {
    TgRelay *relay = g_ptr_array_index(session->relays, i);
    short events = tg_relay_client_events(relay, ssh_output_queued);

    /* a socket nothing is wanted from is left out: poll() would report its
     * error or hang-up every round, a busy loop */
    session->pollfds[n++] = (struct pollfd){
      .fd = events != 0 ? tg_relay_client_fd(relay) : -1,
      .events = events,
    };
  }
  return n;
}

static gboolean
session_alive(TgSession *session, GError **error)
{
  /* a fatal protocol error (e.g. an oversized packet) leaves libssh's
   * session in its error state while ssh_is_connected() stays true; its
   * error code alone says little (SSH_FATAL is also set for data on an
   * unknown channel, which libssh survives) */
  if (ssh_is_connected(session->ssh) &&
      (ssh_get_status(session->ssh) & (SSH_CLOSED | SSH_CLOSED_ERROR)) == 0)
    return TRUE;
  g_set_error(error, TG_ERROR, TG_ERROR_DISCONNECTED, "Lost the connection to %s: %s",
              session->config->host,
              ssh_get_error(session->ssh)[0] != '\0' ? ssh_get_error(session->ssh)
                                                     : "the server closed it");
  return FALSE;
}

/* libssh reads at most 4 KiB of the socket per poll round, so it is pumped
 * until the socket is drained (or a bound, to stay fair to the clients).
 * Packets are decrypted and dispatched; channel callbacks mark the relays
 * that got data, EOF or close. */
static gboolean
pump_ssh(TgSession *session, GError **error)
{
  for (int i = 0; i < PUMP_ROUNDS; i++) {
    int rc = ssh_event_dopoll(session->event, 0);
    if (rc == SSH_ERROR || !ssh_is_connected(session->ssh)) {
      if (session_alive(session, error))
        g_set_error(error, TG_ERROR, TG_ERROR_DISCONNECTED,
                    "SSH session with %s failed: %s", session->config->host,
                    ssh_get_error(session->ssh));
      return FALSE;
    }
    if (rc == SSH_AGAIN)
      break;
  }
  return session_alive(session, error);
}

/* The earliest of @timeout (ms, -1: none) and @when (monotonic µs, 0: none). */
static int
timeout_until(int timeout, gint64 when)
{
  int left;

  if (when == 0)
    return timeout;
  left = (int)MIN(MAX(0, (when - g_get_monotonic_time()) / 1000 + 1), G_MAXINT / 2);
  return timeout < 0 ? left : MIN(timeout, left);
}

/* Keepalive and the checks asked for by tg_session_check_now(): FALSE with
 * @error when the server has not answered in time. */
static gboolean
server_answers(TgSession *session, gint64 now, GError **error)
{
  TgSessionConfig *config = session->config;
  guint keepalive = config->keepalive_seconds;
  guint count = MAX(config->keepalive_count, 1);

  guint64 bytes;

  /* what the server sent, whoever read it: libssh takes a keepalive's
   * answer inside ssh_send_keepalive(), where no poll() of ours sees it */
  if (tg_tcp_bytes_received(ssh_get_fd(session->ssh), &bytes) &&
      bytes != session->bytes_heard) {
    session->bytes_heard = bytes;
    session->last_heard = now;
  }
  if (session->check_deadline != 0) {
    if (session->last_heard >= session->check_started)
      session->check_deadline = 0;
    else if (now >= session->check_deadline) {
      g_set_error(error, TG_ERROR, TG_ERROR_DISCONNECTED,
                  "No answer from %s within %d s after the network changed", config->host,
                  TG_SESSION_CHECK_SECONDS);
      return FALSE;
    }
  }
  if (keepalive == 0)
    return TRUE;
  if (now - session->last_heard >= (gint64)keepalive * count * G_USEC_PER_SEC) {
    g_set_error(error, TG_ERROR, TG_ERROR_DISCONNECTED,
                "No answer from %s for %u s (keepalive every %u s, %u unanswered)",
                config->host, keepalive * count, keepalive, count);
    return FALSE;
  }
  if (now - MAX(session->last_heard, session->last_probe) >=
      (gint64)keepalive * G_USEC_PER_SEC)
    send_probe(session);
  return TRUE;
}

/* When server_answers() has something to do next (monotonic µs, 0: never). */
static gint64
next_answer_check(TgSession *session)
{
  guint keepalive = session->config->keepalive_seconds;
  gint64 next = session->check_deadline;

  if (keepalive > 0) {
    gint64 probe = MAX(session->last_heard, session->last_probe) +
                   (gint64)keepalive * G_USEC_PER_SEC;
    next = next == 0 ? probe : MIN(next, probe);
  }
  return next;
}

/* tg_session_check_now() and tg_session_suspend() as the relay loop sees
 * them: FALSE with @error when the session is to be closed for sleep. */
static gboolean
take_requests(TgSession *session, GError **error)
{
  if (atomic_load(&session->suspend_requested) && session->config->reconnect) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_DISCONNECTED,
                        "Closed while the system sleeps");
    return FALSE;
  }
  if (atomic_exchange(&session->check_requested, FALSE) && session->check_deadline == 0) {
    session->check_started = g_get_monotonic_time();
    session->check_deadline =
        session->check_started + TG_SESSION_CHECK_SECONDS * G_USEC_PER_SEC;
    send_probe(session);
  }
  return TRUE;
}

static gboolean
run_relays(TgSession *session, GError **error)
{
  GPtrArray *listeners = session->config->listeners;

  session->last_heard = g_get_monotonic_time();
  session->last_probe = 0;
  session->probe_in_flight = FALSE;
  session->bytes_heard = 0;
  tg_tcp_bytes_received(ssh_get_fd(session->ssh), &session->bytes_heard);
  session->check_deadline = 0;
  apply_commands(session, TRUE); /* those queued while connecting */

  while (!stop_requested(session)) {
    nfds_t n;
    int timeout = -1;
    guint relays_before;
    gint64 now = g_get_monotonic_time();

    if (!take_requests(session, error) || !server_answers(session, now, error))
      return FALSE;
    if (session->pending_listens->len > 0) {
      retry_pending_listens(session, now);
      if (!session_alive(session, error))
        return FALSE;
    }
    n = build_pollfds(session);
    relays_before = session->relays->len;
    timeout = timeout_until(timeout, next_answer_check(session));
    for (guint i = 0; i < session->pending_listens->len; i++)
      timeout = timeout_until(
          timeout, g_array_index(session->pending_listens, PendingListen, i).next_try);
    if (session->accept_paused_until > now)
      timeout = timeout_until(timeout, session->accept_paused_until);
    for (guint i = 0; i < session->relays->len && timeout != 0; i++) {
      TgRelay *relay = g_ptr_array_index(session->relays, i);

      if (tg_relay_has_news(relay))
        timeout = 0; /* taken from libssh below, not announced by the socket */
      else
        timeout = timeout_until(timeout, tg_relay_deadline(relay));
    }
    if (poll(session->pollfds, n, timeout) < 0 && errno != EINTR) {
      g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "poll: %s", g_strerror(errno));
      return FALSE;
    }
    if (session->pollfds[0].revents & POLLIN) {
      eventfd_t ignored;
      eventfd_read(session->wake_fd, &ignored);
      apply_commands(session, TRUE);
      continue; /* the poll set changed */
    }
    if (session->pollfds[1].revents != 0) {
      /* anything from the server is a sign of life */
      if (session->pollfds[1].revents & POLLIN)
        session->last_heard = g_get_monotonic_time();
      if (!pump_ssh(session, error))
        return FALSE;
    }
    for (guint i = 0; i < listeners->len; i++) {
      if (session->pollfds[2 + i].revents & POLLIN)
        accept_connections(session, g_ptr_array_index(listeners, i));
    }
    /* relays in reverse, so that removing one does not move the unvisited */
    for (guint i = session->relays->len; i-- > 0;) {
      /* per relay: one relay's write may fill libssh's queue for the next */
      gboolean ssh_output_queued =
          (ssh_get_status(session->ssh) & SSH_WRITE_PENDING) != 0;
      TgRelay *relay = g_ptr_array_index(session->relays, i);
      short revents =
          i < relays_before ? session->pollfds[2 + listeners->len + i].revents : 0;
      TgRelayStatus status;

      if (revents == 0 && !tg_relay_wants_pump(relay))
        continue;
      status = tg_relay_pump(relay, revents, ssh_output_queued, session->counters);
      if (status == TG_RELAY_SOCKS_REQUEST)
        status = socks_decide(session, relay, ssh_output_queued);
      if (status != TG_RELAY_CONTINUE)
        relay_finish(session, i, status);
    }
    if (!session_alive(session, error))
      return FALSE;
  }
  return TRUE;
}

/* A lost session's socket: the server does not know it is over, and keeps
 * the session (and its remote ports) until its own timeout, maybe for
 * ever. A FIN does not reach it over a dead path, and the kernel gives up
 * retransmitting an orphan's FIN at once after a routing error. So a
 * duplicate is kept (without its user timeout) and reset once the tunnel
 * is back, when the path is known to work: the server drops the session
 * at once. */
static void
keep_stale(TgSession *session, int fd)
{
  int kept = fcntl(fd, F_DUPFD_CLOEXEC, 3);

  if (kept < 0)
    return;
  tg_tcp_keep(kept);
  if (session->stale->len >= MAX_STALE_CONNECTIONS) {
    tg_tcp_reset(g_array_index(session->stale, int, 0));
    g_array_remove_index(session->stale, 0);
  }
  g_array_append_val(session->stale, kept);
}

static void
reset_stale(TgSession *session)
{
  for (guint i = 0; i < session->stale->len; i++)
    tg_tcp_reset(g_array_index(session->stale, int, i));
  g_array_set_size(session->stale, 0);
}

/* Closes the SSH session and what lives in it: its connections (audited,
 * the user's slots released) and the server's listeners. The listeners of
 * the tunnel stay. @clean: say goodbye (SSH_MSG_DISCONNECT, so that the
 * server frees the tunnel's remote ports at once); otherwise the socket is
 * shut down first, so that nothing blocks on a path that is gone. */
static void
release_session(TgSession *session, gboolean clean)
{
  while (session->relays->len > 0)
    relay_finish(session, session->relays->len - 1, TG_RELAY_FAILED);
  g_array_set_size(session->remotes, 0);
  g_array_set_size(session->pending_listens, 0);
  if (session->event != NULL) {
    ssh_event_remove_session(session->event, session->ssh);
    ssh_event_free(session->event);
    session->event = NULL;
  }
  close_cancel_fds(session);
  if (session->ssh != NULL) {
    /* libssh 0.10 closes a socket given with SSH_OPTIONS_FD on some error
     * paths but not on ssh_disconnect(): close it only if it still has it */
    int fd = ssh_get_fd(session->ssh);

    if (!clean && fd >= 0) {
      keep_stale(session, fd);
      shutdown(fd, SHUT_RDWR); /* nothing blocks on a path that is gone */
    }
    ssh_disconnect(session->ssh);
    ssh_free(session->ssh);
    session->ssh = NULL;
    if (fd >= 0)
      close(fd);
  }
  if (session->agent_fd >= 0)
    close(g_steal_fd(&session->agent_fd));
}

/* Closes everything the tunnel holds, so that its ports are free before
 * the final report reaches the D-Bus thread. */
static void
release_everything(TgSession *session)
{
  release_session(session, FALSE);
  expire_held(session, G_MAXUINT, 0, "the tunnel ended");
  reset_stale(session);
  g_ptr_array_set_size(session->config->listeners, 0);
  g_clear_pointer(&session->identity, ssh_key_free);
}

typedef enum {
  WAIT_READMISSION, /* for the READMIT answer, until the deadline */
  WAIT_RETRY,       /* until the deadline, or a nudge (network, resume) */
  WAIT_RESUME,      /* closed for sleep: until the resume */
} WaitMode;

typedef enum {
  WAITED,         /* go on */
  WAITED_NUDGED,  /* WAIT_RETRY: go on at once, the network changed */
  WAITED_STOP,    /* the tunnel is to close */
  WAITED_SUSPEND, /* WAIT_RETRY: the system goes to sleep meanwhile */
} WaitResult;

/* While the session is down: commands are applied and new connections held
 * until what @mode waits for comes (@deadline: monotonic µs). */
static WaitResult
wait_down(TgSession *session, gint64 deadline, WaitMode mode)
{
  GPtrArray *listeners = session->config->listeners;

  for (;;) {
    gint64 now = g_get_monotonic_time();
    int timeout = -1;
    nfds_t n = 0;

    if (stop_requested(session))
      return WAITED_STOP;
    if (mode == WAIT_READMISSION && session->readmitted)
      return WAITED;
    if (mode == WAIT_RETRY && atomic_load(&session->suspend_requested))
      return WAITED_SUSPEND;
    if (mode == WAIT_RESUME && !atomic_load(&session->suspend_requested))
      return WAITED;
    if (mode == WAIT_RETRY && atomic_exchange(&session->check_requested, FALSE))
      return WAITED_NUDGED;
    expire_held(session, G_MAXUINT, now,
                "the tunnel is reconnecting, and the connection waited " G_STRINGIFY(
                    HOLD_SECONDS) " s for it");
    if (mode != WAIT_RESUME) {
      if (now >= deadline)
        return WAITED;
      timeout = timeout_until(timeout, deadline);
    }
    for (guint i = 0; i < session->held->len; i++)
      timeout =
          timeout_until(timeout, g_array_index(session->held, HeldConnection, i).until);

    if (1 + listeners->len > session->pollfds_size) {
      session->pollfds_size = MAX(1 + listeners->len, session->pollfds_size * 2);
      session->pollfds = g_renew(struct pollfd, session->pollfds, session->pollfds_size);
    }
    session->pollfds[n++] = (struct pollfd){ .fd = session->wake_fd, .events = POLLIN };
    for (guint i = 0; i < listeners->len; i++)
      session->pollfds[n++] = (struct pollfd){
        .fd = now >= session->accept_paused_until
                  ? ((TgListener *)g_ptr_array_index(listeners, i))->fd
                  : -1,
        .events = POLLIN,
      };
    if (session->accept_paused_until > now)
      timeout = timeout_until(timeout, session->accept_paused_until);
    if (poll(session->pollfds, n, timeout) < 0 && errno != EINTR)
      return WAITED; /* cannot wait: go on at once */
    if (session->pollfds[0].revents & POLLIN) {
      eventfd_t ignored;
      eventfd_read(session->wake_fd, &ignored);
      apply_commands(session, TRUE);
      continue; /* the listeners may have changed */
    }
    for (guint i = 0; i < listeners->len; i++) {
      if (session->pollfds[1 + i].revents & POLLIN)
        accept_connections(session, g_ptr_array_index(listeners, i));
    }
  }
}

/* Connected and authenticated again: the D-Bus thread re-admits the
 * forwards (the policy, the owner's groups, what polkit granted) before
 * anything is served. A refusal is final. */
static gboolean
readmit(TgSession *session, GError **error)
{
  gboolean running;

  if (!session->was_up)
    return TRUE; /* the first time, OpenTunnel's admission came before */
  session->readmitted = FALSE;
  session->readmitting = TRUE;
  report_state(session, TG_SESSION_READMIT, NULL);
  running = wait_down(session, g_get_monotonic_time() + READMIT_SECONDS * G_USEC_PER_SEC,
                      WAIT_READMISSION) == WAITED;
  session->readmitting = FALSE;
  if (!running) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_DISCONNECTED, "Closed");
    return FALSE;
  }
  if (!session->readmitted) {
    g_set_error(error, TG_ERROR, TG_ERROR_DISCONNECTED,
                "The forwards were not re-admitted within %d s", READMIT_SECONDS);
    return FALSE;
  }
  if (session->readmit_refusal != NULL) {
    session->refused_for_good = TRUE;
    g_propagate_error(error, g_steal_pointer(&session->readmit_refusal));
    return FALSE;
  }
  return TRUE;
}

/* What may pass: the network, the server's restart, the agent's; what may
 * not: the server's host key, its refusal of the key, the policy. */
static gboolean
error_is_transient(TgSession *session, const GError *error)
{
  if (session->refused_for_good)
    return FALSE;
  if (session->credentials_unreachable)
    return TRUE;
  if (error->domain != TG_ERROR)
    return FALSE;
  switch (error->code) {
  case TG_ERROR_CONNECT_FAILED:
  case TG_ERROR_DISCONNECTED:
  case TG_ERROR_LIMIT_EXCEEDED:
    return TRUE;
  default:
    return FALSE;
  }
}

gint64
tg_session_retry_delay(guint attempt)
{
  gint64 d = MIN((gint64)1 << MIN(attempt - 1, 16), TG_SESSION_RETRY_MAX_SECONDS) *
             G_USEC_PER_SEC;

  return d / 2 + g_random_int_range(0, (gint32)(d / 2) + 1);
}

static gboolean
start_serving(TgSession *session, GError **error)
{
  TgSessionReport up = { .state = TG_SESSION_UP, .reconnected = session->was_up };

  ssh_set_blocking(session->ssh, 0);
  session->event = ssh_event_new();
  if (session->event == NULL ||
      ssh_event_add_session(session->event, session->ssh) != SSH_OK) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_LIMIT_EXCEEDED,
                        "Cannot poll the SSH session (out of memory)");
    return FALSE;
  }
  session->up = TRUE;
  report_full(session, &up, NULL);
  session->was_up = TRUE;
  reset_stale(session); /* the path works again: the server drops the old ones */
  serve_held(session);
  return TRUE;
}

static gpointer
session_thread(gpointer data)
{
  TgSession *session = data;
  TgSessionConfig *config = session->config;
  g_autoptr(GError) error = NULL;
  gboolean final = FALSE;
  guint attempt = 0;
  guint backoff = 0; /* the delay's step: attempt, or 1 again after a nudge */

  open_view(session);
  for (;;) {
    gboolean suspended = FALSE;
    TgSessionReport down = { .state = TG_SESSION_RECONNECTING };
    WaitResult waited;
    gint64 delay = 0;
    guint max;

    g_clear_error(&error);
    if (connect_session(session, &error) && readmit(session, &error) &&
        start_forwards(session, &error) && start_serving(session, &error)) {
      attempt = backoff = 0;
      if (run_relays(session, &error))
        break; /* stopped */
      suspended = atomic_load(&session->suspend_requested) && config->reconnect;
    }
    session->up = FALSE;
    release_session(session, suspended);
    if (stop_requested(session))
      break;
    if (!config->reconnect || (!session->was_up && !config->retry_first) ||
        !error_is_transient(session, error)) {
      final = TRUE;
      break;
    }
    if (!suspended) {
      max = atomic_load(&session->max_attempts);
      if (max != G_MAXUINT && attempt >= max) {
        g_prefix_error(&error, "Gave up after %u attempts to reconnect: ", max);
        final = TRUE;
        break;
      }
      attempt++;
      backoff++;
      delay = tg_session_retry_delay(backoff);
      down.attempt = attempt;
      down.next_attempt = g_get_real_time() + delay;
      report_full(session, &down, g_error_copy(error));
      waited = wait_down(session, g_get_monotonic_time() + delay, WAIT_RETRY);
      if (waited == WAITED_NUDGED)
        backoff = 0; /* a new network: quick attempts again */
    } else {
      waited = WAITED_SUSPEND;
    }
    if (waited == WAITED_SUSPEND) {
      /* no attempt while the system sleeps; the resume brings one at once */
      TgSessionReport sleeping = { .state = TG_SESSION_RECONNECTING, .suspended = TRUE };

      report_full(session, &sleeping, g_error_copy(error));
      waited = wait_down(session, 0, WAIT_RESUME);
      backoff = 0;
    }
    if (waited == WAITED_STOP)
      break;
  }
  release_everything(session);
  apply_commands(session, FALSE); /* everything is closed: nothing to apply */
  if (!final)
    report_state(session, TG_SESSION_CLOSED, NULL);
  else
    report_state(session, TG_SESSION_FAILED, g_steal_pointer(&error));
  return NULL;
}

TgSession *
tg_session_start(TgSessionConfig *config, TgCounters *counters, TgUsage *usage,
                 TgUsage *daemon_usage, TgSessionStateFunc state_func,
                 TgSessionListenFunc listen_func, gpointer user_data)
{
  TgSession *session = g_new0(TgSession, 1);
  g_autofree char *name = g_strdup_printf("tunnel-%s", config->tunnel_id);
  GError *error = NULL;

  session->config = config;
  session->counters = counters;
  session->usage = tg_usage_ref(usage);
  session->daemon_usage = tg_usage_ref(daemon_usage);
  g_queue_init(&session->commands);
  session->context = g_main_context_ref_thread_default();
  session->state_func = state_func;
  session->listen_func = listen_func;
  session->user_data = user_data;
  session->remotes = g_array_new(FALSE, TRUE, sizeof(RemoteListen));
  session->pending_listens = g_array_new(FALSE, TRUE, sizeof(PendingListen));
  session->removed = g_array_new(FALSE, TRUE, sizeof(gboolean));
  session->held = g_array_new(FALSE, TRUE, sizeof(HeldConnection));
  session->stale = g_array_new(FALSE, TRUE, sizeof(int));
  session->diag_fd = -1;
  session->new_agent_fd = session->new_identity_fd = -1;
  atomic_store(&session->max_attempts, G_MAXUINT);
  for (guint i = 0; i < config->listeners->len && session->diag_fd < 0; i++) {
    const TgListener *listener = g_ptr_array_index(config->listeners, i);

    if (listener->allowed_uids != NULL)
      session->diag_fd = tg_peer_owner_open(NULL); /* else again on accept */
  }
  session->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  session->cancel_fds[0] = session->cancel_fds[1] = -1;
  session->agent_fd = -1;
  session->view_fd = -1;
  session->relays = g_ptr_array_new_with_free_func((GDestroyNotify)tg_relay_free);
  g_mutex_init(&session->lock);
  if (session->wake_fd < 0)
    error =
        g_error_new(TG_ERROR, TG_ERROR_LIMIT_EXCEEDED,
                    "Cannot start tunnel %s: no descriptor for its wake-up (eventfd: %s)",
                    config->tunnel_id, g_strerror(errno));
  else
    session->thread = g_thread_try_new(name, session_thread, session, &error);
  if (session->thread == NULL) {
    /* out of descriptors, threads or memory: this tunnel fails, the daemon
     * runs on (g_thread_new would abort it) */
    if (error->domain != TG_ERROR) {
      GError *limit = g_error_new(TG_ERROR, TG_ERROR_LIMIT_EXCEEDED,
                                  "Cannot start tunnel %s: no thread for it (%s)",
                                  config->tunnel_id, error->message);
      g_error_free(error);
      error = limit;
    }
    release_everything(session);
    apply_commands(session, FALSE);
    report_state(session, TG_SESSION_FAILED, error);
  }
  return session;
}

void
tg_session_stop(TgSession *session)
{
  atomic_store(&session->stop_requested, TRUE);
  eventfd_write(session->wake_fd, 1);
  /* a handshake in progress blocks in libssh: cut its socket */
  g_mutex_lock(&session->lock);
  for (guint i = 0; i < G_N_ELEMENTS(session->cancel_fds); i++) {
    if (session->cancel_fds[i] >= 0)
      shutdown(session->cancel_fds[i], SHUT_RDWR);
  }
  g_mutex_unlock(&session->lock);
}

static void
queue_command(TgSession *session, Command *command)
{
  gboolean finished;

  g_mutex_lock(&session->lock);
  finished = session->finished;
  if (!finished)
    g_queue_push_tail(&session->commands, command);
  g_mutex_unlock(&session->lock);
  if (finished) /* the tunnel is ending: nothing to change any more */
    command_acknowledge(session, command);
  else
    eventfd_write(session->wake_fd, 1);
}

void
tg_session_add_forward(TgSession *session, guint forward_index, TgForward *forward,
                       GPtrArray *listeners, TgConnectBack *connect_back,
                       TgSessionDoneFunc done, gpointer done_data)
{
  Command *command = g_new0(Command, 1);

  command->kind = COMMAND_ADD;
  command->index = forward_index;
  command->forward = forward;
  command->listeners = listeners;
  command->connect_back = connect_back;
  command->done = done;
  command->done_data = done_data;
  queue_command(session, command);
}

void
tg_session_remove_forward(TgSession *session, guint forward_index, TgSessionDoneFunc done,
                          gpointer done_data)
{
  Command *command = g_new0(Command, 1);

  command->kind = COMMAND_REMOVE;
  command->index = forward_index;
  command->done = done;
  command->done_data = done_data;
  queue_command(session, command);
}

void
tg_session_readmitted(TgSession *session, const GError *refusal)
{
  Command *command = g_new0(Command, 1);
  gboolean finished;

  command->kind = COMMAND_READMITTED;
  command->error = refusal != NULL ? g_error_copy(refusal) : NULL;
  g_mutex_lock(&session->lock);
  finished = session->finished;
  if (!finished)
    g_queue_push_tail(&session->commands, command);
  g_mutex_unlock(&session->lock);
  if (finished)
    command_free(command); /* the tunnel ended meanwhile */
  else
    eventfd_write(session->wake_fd, 1);
}

void
tg_session_check_now(TgSession *session)
{
  atomic_store(&session->check_requested, TRUE);
  eventfd_write(session->wake_fd, 1);
}

void
tg_session_suspend(TgSession *session, gboolean sleeping)
{
  atomic_store(&session->suspend_requested, sleeping);
  if (!sleeping)
    atomic_store(&session->check_requested, TRUE); /* up ones: still there? */
  eventfd_write(session->wake_fd, 1);
}

static void
clear_new_credentials(TgSession *session)
{
  g_clear_pointer(&session->new_agent_path, g_free);
  g_clear_pointer(&session->new_identity_path, g_free);
  if (session->new_agent_fd >= 0)
    close(g_steal_fd(&session->new_agent_fd));
  if (session->new_identity_fd >= 0)
    close(g_steal_fd(&session->new_identity_fd));
}

void
tg_session_set_credentials(TgSession *session, char *agent_path, int agent_fd,
                           char *identity_path, int identity_fd)
{
  g_mutex_lock(&session->lock);
  clear_new_credentials(session);
  session->new_agent_path = agent_path;
  session->new_agent_fd = agent_fd;
  session->new_identity_path = identity_path;
  session->new_identity_fd = identity_fd;
  session->new_credentials = TRUE;
  g_mutex_unlock(&session->lock);
  tg_session_check_now(session); /* a reconnecting session tries them at once */
}

void
tg_session_set_max_attempts(TgSession *session, guint max_attempts)
{
  atomic_store(&session->max_attempts, max_attempts);
}

void
tg_session_free(TgSession *session)
{
  if (session == NULL)
    return;
  if (session->thread != NULL)
    g_thread_join(session->thread);
  if (session->wake_fd >= 0)
    close(session->wake_fd);
  if (session->diag_fd >= 0)
    close(session->diag_fd);
  if (session->view_fd >= 0)
    close(session->view_fd);
  g_clear_error(&session->view_error);
  g_mutex_clear(&session->lock);
  g_ptr_array_unref(session->relays);
  g_array_unref(session->remotes);
  g_array_unref(session->pending_listens);
  g_array_unref(session->removed);
  g_array_unref(session->held);
  g_array_unref(session->stale);
  g_clear_error(&session->readmit_refusal);
  clear_new_credentials(session);
  g_assert(g_queue_is_empty(&session->commands));
  tg_usage_unref(session->usage);
  tg_usage_unref(session->daemon_usage);
  g_free(session->pollfds);
  tg_session_config_free(session->config);
  g_main_context_unref(session->context);
  g_free(session);
}
