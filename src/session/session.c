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

/* A remote forward the server listens for (worker thread only). */
typedef struct {
  guint forward_index;
  char address[256]; /* as sent: "localhost", "", an address */
  guint16 port;      /* as bound (the server's choice for 0) */
  gboolean active;   /* listening; FALSE once cancelled */
} RemoteListen;

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

  /* worker thread only */
  int view_fd;        /* the opener's file-system view: the tunnel's paths mean */
  GError *view_error; /* what they mean there (or why it could not be seen) */
  ssh_session ssh;
  ssh_event event;
  int agent_fd;
  ssh_key identity;
  GPtrArray *relays; /* TgRelay* */
  GArray *remotes;   /* RemoteListen */
  struct pollfd *pollfds;
  gsize pollfds_size;
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
  TgSessionState state;
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
  if (report->state != TG_SESSION_UP && g_atomic_int_get(&session->pending_acks) > 0) {
    Report *again = g_new0(Report, 1);

    *again = *report;
    report->error = NULL;
    dispatch_later(session, report_dispatch, again, report_free);
    return G_SOURCE_REMOVE;
  }
  session->state_func(report->state, report->error, session->user_data);
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
report_state(TgSession *session, TgSessionState state, GError *error)
{
  Report *report = g_new0(Report, 1);

  report->session = session;
  report->state = state;
  report->error = error;
  tg_text_error_printable(report->error); /* the server's words, often */
  dispatch_later(session, report_dispatch, report, report_free);
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

static gboolean
load_credentials(TgSession *session, GError **error)
{
  TgSessionConfig *config = session->config;
  g_autoptr(GBytes) key_text = NULL;
  int key_fd;

  if (config->agent_path != NULL) {
    int view_fd = view(session, error);

    if (view_fd < 0)
      return FALSE;
    session->agent_fd =
        tg_connect_unix_as_user(&config->owner, view_fd, config->agent_path, error);
    if (session->agent_fd < 0)
      return FALSE;
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

  if (config->identity_path != NULL) {
    int view_fd = view(session, error);

    key_fd = view_fd < 0 ? -1
                         : tg_open_file_as_user(&config->owner, view_fd,
                                                config->identity_path, error);
  } else
    key_fd = g_steal_fd(&config->identity_fd);
  if (key_fd < 0)
    return FALSE;
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
set_keepalive(int fd, guint seconds)
{
  int one = 1, count = 3, idle = seconds;
  unsigned int user_timeout = seconds * count * 1000;

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

  open_view(session);
  if (!load_credentials(session, error))
    return FALSE;
  fd = connect_tcp(session, error);
  if (fd < 0)
    return FALSE;
  set_keepalive(fd, config->keepalive_seconds > 0 ? config->keepalive_seconds : 60);

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
    TgRelay *relay;
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
    if (forward->kind == TG_FORWARD_DYNAMIC)
      relay = tg_relay_new_socks(session->ssh, listener->forward_index, fd, address, port,
                                 g_get_monotonic_time() +
                                     SOCKS_HANDSHAKE_SECONDS * G_USEC_PER_SEC);
    else if (forward->connect.path != NULL)
      relay = tg_relay_new_unix_target(session->ssh, listener->forward_index, fd,
                                       forward->connect.path, address, port);
    else
      relay = tg_relay_new(session->ssh, listener->forward_index, fd,
                           forward->connect.host, forward->connect.port, address, port);
    add_relay(session, relay, forward, FALSE, address, port);
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

/* What the first forwards need beyond what the D-Bus thread bound: the
 * server's listeners (R) and the Unix socket listeners, before UP. */
static gboolean
start_forwards(TgSession *session, GError **error)
{
  ssh_set_message_callback(session->ssh, on_ssh_message, session);
  for (guint i = 0; i < session->config->forwards->len; i++) {
    const TgForward *forward = g_ptr_array_index(session->config->forwards, i);
    if (forward->kind == TG_FORWARD_REMOTE && !request_listen(session, i, error))
      return FALSE;
    if (forward->kind == TG_FORWARD_LOCAL && forward->listen.path != NULL &&
        !bind_unix_listener(session, i, error))
      return FALSE;
  }
  return TRUE;
}

/* Commands from the D-Bus thread: a forward to add (with its listeners,
 * bound there) or to take away. Each is acknowledged back in the D-Bus
 * thread once applied, so that a port is free when RemoveForward returns. */
typedef struct {
  TgSession *session; /* set when acknowledged */
  gboolean add;
  guint index;
  TgForward *forward;          /* add */
  GPtrArray *listeners;        /* add: TgListener* */
  TgConnectBack *connect_back; /* add, R */
  TgSessionDoneFunc done;
  gpointer done_data;
  gboolean applied;
  GError *error; /* not applied because the server refused */
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

  if (command->add) {
    /* forward indexes are positions in config->forwards: keep them aligned */
    g_assert(command->index == config->forwards->len);
    g_ptr_array_add(config->forwards, g_steal_pointer(&command->forward));
    g_ptr_array_extend_and_steal(config->listeners, g_steal_pointer(&command->listeners));
    const TgForward *forward = g_ptr_array_index(config->forwards, command->index);

    if (command->connect_back != NULL) {
      g_ptr_array_add(config->connect_backs, g_steal_pointer(&command->connect_back));
      if (!request_listen(session, command->index, &command->error))
        return; /* not applied: the D-Bus thread takes the forward back */
    }
    if (forward->kind == TG_FORWARD_LOCAL && forward->listen.path != NULL &&
        !bind_unix_listener(session, command->index, &command->error))
      return;
  } else {
    const TgForward *forward = g_ptr_array_index(config->forwards, command->index);

    if (forward->kind == TG_FORWARD_REMOTE)
      cancel_listen(session, command->index);
    for (guint i = config->listeners->len; i-- > 0;) {
      if (((TgListener *)g_ptr_array_index(config->listeners, i))->forward_index ==
          command->index)
        g_ptr_array_remove_index(config->listeners, i); /* closes it */
    }
    for (guint i = session->relays->len; i-- > 0;) {
      if (tg_relay_forward_index(g_ptr_array_index(session->relays, i)) == command->index)
        relay_finish(session, i, TG_RELAY_FAILED);
    }
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

static gboolean
run_relays(TgSession *session, GError **error)
{
  GPtrArray *listeners = session->config->listeners;
  gint64 next_keepalive = 0;
  guint keepalive = session->config->keepalive_seconds;

  if (keepalive > 0)
    next_keepalive = g_get_monotonic_time() + keepalive * G_USEC_PER_SEC;
  apply_commands(session, TRUE); /* those queued while connecting */

  while (!stop_requested(session)) {
    nfds_t n = build_pollfds(session);
    int timeout = -1;
    guint relays_before = session->relays->len;

    if (keepalive > 0)
      timeout = MAX(0, (next_keepalive - g_get_monotonic_time()) / 1000);
    if (session->accept_paused_until > g_get_monotonic_time()) {
      int left =
          (int)((session->accept_paused_until - g_get_monotonic_time()) / 1000 + 1);
      timeout = timeout < 0 ? left : MIN(timeout, left);
    }
    for (guint i = 0; i < session->relays->len && timeout != 0; i++) {
      TgRelay *relay = g_ptr_array_index(session->relays, i);
      gint64 deadline = tg_relay_deadline(relay);

      if (tg_relay_has_news(relay))
        timeout = 0; /* taken from libssh below, not announced by the socket */
      else if (deadline != 0) {
        int left = (int)MIN(MAX(0, (deadline - g_get_monotonic_time()) / 1000 + 1),
                            G_MAXINT / 2);
        timeout = timeout < 0 ? left : MIN(timeout, left);
      }
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
    if (session->pollfds[1].revents != 0 && !pump_ssh(session, error))
      return FALSE;
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
    if (keepalive > 0 && g_get_monotonic_time() >= next_keepalive) {
      ssh_send_keepalive(session->ssh);
      next_keepalive = g_get_monotonic_time() + keepalive * G_USEC_PER_SEC;
    }
    if (!session_alive(session, error))
      return FALSE;
  }
  return TRUE;
}

/* Closes everything the session holds, so that its ports are free before
 * the final report reaches the D-Bus thread. */
static void
release_everything(TgSession *session)
{
  while (session->relays->len > 0) /* audited, and the user's slots released */
    relay_finish(session, session->relays->len - 1, TG_RELAY_FAILED);
  g_ptr_array_set_size(session->config->listeners, 0);
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

    ssh_disconnect(session->ssh);
    ssh_free(session->ssh);
    session->ssh = NULL;
    if (fd >= 0)
      close(fd);
  }
  if (session->agent_fd >= 0)
    close(g_steal_fd(&session->agent_fd));
  g_clear_pointer(&session->identity, ssh_key_free);
}

static gpointer
session_thread(gpointer data)
{
  TgSession *session = data;
  g_autoptr(GError) error = NULL;
  gboolean ok = connect_session(session, &error) && start_forwards(session, &error);

  if (ok) {
    ssh_set_blocking(session->ssh, 0);
    session->event = ssh_event_new();
    ssh_event_add_session(session->event, session->ssh);
    report_state(session, TG_SESSION_UP, NULL);
    ok = run_relays(session, &error);
  }
  release_everything(session);
  apply_commands(session, FALSE); /* everything is closed: nothing to apply */
  if (ok || stop_requested(session))
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
  session->diag_fd = -1;
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

  command->add = TRUE;
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

  command->index = forward_index;
  command->done = done;
  command->done_data = done_data;
  queue_command(session, command);
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
  g_assert(g_queue_is_empty(&session->commands));
  tg_usage_unref(session->usage);
  tg_usage_unref(session->daemon_usage);
  g_free(session->pollfds);
  tg_session_config_free(session->config);
  g_main_context_unref(session->context);
  g_free(session);
}
