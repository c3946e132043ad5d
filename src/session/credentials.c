/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "credentials.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tg-error.h"

#define CHILD_TIMEOUT_SECONDS 5
#define MAX_GROUPS 256

typedef enum { OPEN_FILE, CONNECT_UNIX, LISTEN_UNIX, UNLINK_PATH } OpenKind;

/* The child: only async-signal-safe calls from here on (the parent has
 * threads). Raw syscalls change the credentials of this, the only, thread. */
G_GNUC_NORETURN static void
child_open_as_user(int channel, const TgIdentity *user, const gid_t *groups, int n_groups,
                   OpenKind kind, const char *path)
{
  int result_errno = 0;
  int fd = -1;
  char control[CMSG_SPACE(sizeof(int))] = { 0 };
  struct iovec iov = { &result_errno, sizeof result_errno };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

  alarm(CHILD_TIMEOUT_SECONDS);
  if (dup2(channel, 3) < 0)
    _exit(127);
  channel = 3;
  syscall(SYS_close_range, 4, ~0U, 0);

  if (syscall(SYS_setgroups, n_groups, groups) != 0 ||
      syscall(SYS_setresgid, user->gid, user->gid, user->gid) != 0 ||
      syscall(SYS_setresuid, user->uid, user->uid, user->uid) != 0 ||
      geteuid() != user->uid) {
    result_errno = errno != 0 ? errno : EPERM;
    goto send;
  }

  if (kind == OPEN_FILE) {
    fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  } else if (kind == UNLINK_PATH) {
    if (unlink(path) != 0)
      result_errno = errno;
    goto send; /* no descriptor */
  } else {     /* CONNECT_UNIX, LISTEN_UNIX */
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    size_t length = strlen(path);
    int rc;

    if (length >= sizeof address.sun_path) {
      result_errno = ENAMETOOLONG;
      goto send;
    }
    memcpy(address.sun_path, path, length + 1);
    if (kind == LISTEN_UNIX)
      umask(0177); /* the socket file: the caller's, mode 0600 */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
      if (kind == LISTEN_UNIX)
        rc = bind(fd, (struct sockaddr *)&address, sizeof address) == 0
                 ? listen(fd, SOMAXCONN)
                 : -1;
      else
        rc = connect(fd, (struct sockaddr *)&address, sizeof address);
      if (rc != 0) {
        result_errno = errno;
        goto send;
      }
    }
  }
  if (fd < 0)
    result_errno = errno;

send:
  if (result_errno == 0 && kind != UNLINK_PATH) {
    struct cmsghdr *cmsg;

    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
  }
  if (sendmsg(channel, &msg, MSG_NOSIGNAL) < 0)
    _exit(126);
  _exit(0);
}

static int
receive_fd(int channel, gboolean expect_fd, int *child_errno)
{
  char control[CMSG_SPACE(sizeof(int))] = { 0 };
  struct iovec iov = { child_errno, sizeof *child_errno };
  struct msghdr msg = { .msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = control,
                        .msg_controllen = sizeof control };
  struct pollfd pfd = { .fd = channel, .events = POLLIN };
  struct cmsghdr *cmsg;
  int fd = -1;
  ssize_t n;

  *child_errno = EIO;
  if (poll(&pfd, 1, (CHILD_TIMEOUT_SECONDS + 1) * 1000) <= 0) {
    *child_errno = ETIMEDOUT;
    return -1;
  }
  n = recvmsg(channel, &msg, MSG_CMSG_CLOEXEC);
  if (n != sizeof *child_errno) {
    *child_errno = EIO;
    return -1;
  }
  for (cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS &&
        cmsg->cmsg_len == CMSG_LEN(sizeof(int)))
      memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
  }
  if (*child_errno == 0 && fd < 0 && expect_fd)
    *child_errno = EIO;
  if (*child_errno != 0 && fd >= 0) {
    close(fd);
    fd = -1;
  }
  return fd;
}

/* The child has answered (or never will): it must not hold this thread.
 * A child that has not exited a second after its answer (seen under
 * valgrind, whose exit path can deadlock after fork() in a threaded
 * process) is killed, so that waitpid() never blocks for ever. Polled
 * with WNOHANG rather than a pidfd: valgrind 3.19 lacks pidfd_open. */
static void
reap_child(pid_t pid, gboolean kill_now)
{
  gint64 deadline = g_get_monotonic_time() + G_USEC_PER_SEC;

  while (!kill_now) {
    pid_t rc = waitpid(pid, NULL, WNOHANG);

    if (rc == pid || (rc < 0 && errno != EINTR))
      return;
    if (g_get_monotonic_time() >= deadline)
      kill_now = TRUE;
    else if (rc == 0)
      g_usleep(5000);
  }
  kill(pid, SIGKILL);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
    ;
}

static int
open_as_user(const TgIdentity *user, OpenKind kind, const char *path, GError **error)
{
  gid_t groups[MAX_GROUPS];
  int n_groups = MAX_GROUPS;
  int channel[2];
  int child_errno = 0;
  int fd;
  pid_t pid;

  if (path == NULL || path[0] != '/') {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "'%s' is not an absolute path", path != NULL ? path : "");
    return -1;
  }
  if (getgrouplist(user->user_name, user->gid, groups, &n_groups) < 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "User %s is in more than %d groups",
                user->user_name, MAX_GROUPS);
    return -1;
  }
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, channel) < 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "socketpair: %s", g_strerror(errno));
    return -1;
  }

  pid = fork();
  if (pid == 0)
    child_open_as_user(channel[1], user, groups, n_groups, kind, path);
  close(channel[1]);
  if (pid < 0) {
    close(channel[0]);
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "fork: %s", g_strerror(errno));
    return -1;
  }

  fd = receive_fd(channel[0], kind != UNLINK_PATH, &child_errno);
  close(channel[0]);
  reap_child(pid, child_errno == ETIMEDOUT);

  if (child_errno != 0) {
    static const char *const verbs[] = { "open", "connect to", "create the socket",
                                         "remove" };
    g_set_error(error, TG_ERROR,
                child_errno == EADDRINUSE ? TG_ERROR_ADDRESS_IN_USE
                                          : TG_ERROR_INVALID_ARGUMENT,
                "Cannot %s '%s' as user %s: %s", verbs[kind], path, user->user_name,
                g_strerror(child_errno));
    return -1;
  }
  return kind == UNLINK_PATH ? 0 : fd;
}

int
tg_connect_unix_as_user(const TgIdentity *user, const char *path, GError **error)
{
  return open_as_user(user, CONNECT_UNIX, path, error);
}

int
tg_open_file_as_user(const TgIdentity *user, const char *path, GError **error)
{
  return open_as_user(user, OPEN_FILE, path, error);
}

int
tg_listen_unix_as_user(const TgIdentity *user, const char *path, GError **error)
{
  int fd = open_as_user(user, LISTEN_UNIX, path, error);

  if (fd >= 0)
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

gboolean
tg_unlink_as_user(const TgIdentity *user, const char *path, GError **error)
{
  return open_as_user(user, UNLINK_PATH, path, error) == 0;
}

gboolean
tg_socket_peer_is_uid(int fd, uid_t uid, GError **error)
{
  struct ucred peer;
  socklen_t length = sizeof peer;

  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "The ssh-agent descriptor is not a connected Unix socket: %s",
                g_strerror(errno));
    return FALSE;
  }
  if (peer.uid != uid) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "The ssh-agent socket belongs to uid %u, not to the caller (uid %u); "
                "only your own agent can be used",
                (unsigned)peer.uid, (unsigned)uid);
    return FALSE;
  }
  return TRUE;
}

GBytes *
tg_read_key_fd(int fd, gsize max_bytes, int cancel_fd, GError **error)
{
  g_autoptr(GByteArray) content = g_byte_array_new();
  gint64 deadline = g_get_monotonic_time() + CHILD_TIMEOUT_SECONDS * G_USEC_PER_SEC;
  struct stat st;
  guint8 chunk[4096];

  if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode) || S_ISCHR(st.st_mode) ||
      S_ISBLK(st.st_mode)) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                        "The identity is not a regular file, pipe or socket");
    return NULL;
  }
  /* non-blocking: a caller who drains the pipe behind our back must not
   * leave us blocked in read() */
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  for (;;) {
    struct pollfd pfds[2] = { { .fd = fd, .events = POLLIN },
                              { .fd = cancel_fd, .events = POLLIN } };
    gint64 left = (deadline - g_get_monotonic_time()) / 1000;
    ssize_t n;

    if (left <= 0 || poll(pfds, 2, (int)left) == 0) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "Reading the identity took more than %d seconds",
                  CHILD_TIMEOUT_SECONDS);
      return NULL;
    }
    if (pfds[1].revents & POLLIN) {
      g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                          "Reading the identity was cancelled");
      return NULL;
    }
    n = read(fd, chunk, sizeof chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n < 0) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "Cannot read the identity: %s", g_strerror(errno));
      return NULL;
    }
    if (n == 0)
      break;
    if (content->len + (gsize)n > max_bytes) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "The identity is larger than %zu bytes; not a private key", max_bytes);
      return NULL;
    }
    g_byte_array_append(content, chunk, n);
  }
  explicit_bzero(chunk, sizeof chunk);
  return g_byte_array_free_to_bytes(g_steal_pointer(&content));
}
