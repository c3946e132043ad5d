/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "credentials.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
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
/* the descriptors a child works with: its channel, and the one it was given */
#define CHILD_CHANNEL_FD 3
#define CHILD_GIVEN_FD 4
#define CHILD_TARGET_FD 5
#define CHILD_TARGET_PATH "/proc/self/fd/5"

typedef enum {
  OPEN_VIEW,
  OPEN_FILE,
  CONNECT_UNIX,
  LISTEN_UNIX,
  UNLINK_SOCKET,
} OpenKind;

/* What a child answers, with up to two descriptors. */
typedef struct {
  int error_number;
  dev_t dev; /* LISTEN_UNIX: the socket file made */
  ino_t ino;
} ChildAnswer;

/* Whether the kernel (or valgrind, which may lack it) has openat2();
 * decided before any child is forked. */
static gboolean have_openat2;

static gpointer
probe_openat2(gpointer unused)
{
  struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC };
  int fd = (int)syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof how);

  have_openat2 = fd >= 0 || errno != ENOSYS;
  if (fd >= 0)
    close(fd);
  return NULL;
}

/* path as seen from the root directory view_fd: openat2() keeps every step,
 * absolute symbolic links and ".." included, beneath that root. Without
 * openat2() the path is taken relative to the root, where only an absolute
 * symbolic link may lead back into the daemon's own view. */
static int
open_in_view(int view_fd, const char *path, int flags)
{
  if (have_openat2) {
    struct open_how how = { .flags = flags,
                            .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
    return (int)syscall(SYS_openat2, view_fd, path, &how, sizeof how);
  }
  while (*path == '/')
    path++;
  return openat(view_fd, *path != '\0' ? path : ".", flags);
}

/* The child: only async-signal-safe calls from here on (the parent has
 * threads). Raw syscalls change the credentials of this, the only, thread.
 * given_fd: the view (a root directory) paths are resolved in, or for
 * UNLINK_SOCKET the socket's directory. For LISTEN_UNIX and UNLINK_SOCKET,
 * path is the directory and name the file in it. */
G_GNUC_NORETURN static void
child_open_as_user(int channel, int given_fd, const TgIdentity *user, const gid_t *groups,
                   int n_groups, OpenKind kind, const char *path, const char *name,
                   dev_t dev, ino_t ino)
{
  ChildAnswer answer = { 0 };
  int fds[2] = { -1, -1 };
  int n_fds = 0;
  int fd = -1;
  int dir = -1;
  char control[CMSG_SPACE(sizeof fds)] = { 0 };
  struct iovec iov = { &answer, sizeof answer };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
  struct stat st;

  alarm(CHILD_TIMEOUT_SECONDS);
  /* above the numbers they go to first, so that neither overwrites the other */
  channel = fcntl(channel, F_DUPFD, 10);
  if (given_fd >= 0)
    given_fd = fcntl(given_fd, F_DUPFD, 10);
  if (channel < 0 || dup2(channel, CHILD_CHANNEL_FD) < 0 ||
      (given_fd >= 0 && dup2(given_fd, CHILD_GIVEN_FD) < 0))
    _exit(127);
  channel = CHILD_CHANNEL_FD;
  given_fd = given_fd >= 0 ? CHILD_GIVEN_FD : -1;
  syscall(SYS_close_range, CHILD_GIVEN_FD + 1, ~0U, 0);

  if (syscall(SYS_setgroups, n_groups, groups) != 0 ||
      syscall(SYS_setresgid, user->gid, user->gid, user->gid) != 0 ||
      syscall(SYS_setresuid, user->uid, user->uid, user->uid) != 0 ||
      geteuid() != user->uid) {
    answer.error_number = errno != 0 ? errno : EPERM;
    goto send;
  }

  switch (kind) {
  case OPEN_VIEW:
    /* the kernel lets this user open it only if they could trace the process */
    fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    break;
  case OPEN_FILE:
    fd = open_in_view(given_fd, path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    break;
  case CONNECT_UNIX: {
    /* the socket itself, found in the view (a final symbolic link too),
     * is then connected to through this process's descriptor of it */
    struct sockaddr_un address = { .sun_family = AF_UNIX, .sun_path = CHILD_TARGET_PATH };
    int target = open_in_view(given_fd, path, O_PATH | O_CLOEXEC);

    if (target < 0 || dup2(target, CHILD_TARGET_FD) < 0)
      break;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
      answer.error_number = errno;
      goto send;
    }
    break;
  }
  case LISTEN_UNIX: {
    struct sockaddr_un address = { .sun_family = AF_UNIX };

    dir = open_in_view(given_fd, path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    /* bound by its name in the directory: a name that exists, a symbolic
     * link too, is never replaced nor followed */
    if (dir < 0 || fchdir(dir) != 0)
      break;
    memcpy(address.sun_path, name, strlen(name) + 1); /* length checked */
    umask(0177); /* the socket file: the caller's, mode 0600 */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && (bind(fd, (struct sockaddr *)&address, sizeof address) != 0 ||
                    listen(fd, SOMAXCONN) != 0 ||
                    fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) != 0)) {
      answer.error_number = errno;
      goto send;
    }
    answer.dev = st.st_dev;
    answer.ino = st.st_ino;
    break;
  }
  case UNLINK_SOCKET:
    /* only the file made, if it is still there: never another the user
     * put in its place */
    if (fstatat(given_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT)
        answer.error_number = errno;
    } else if (st.st_dev == dev && st.st_ino == ino && unlinkat(given_fd, name, 0) != 0) {
      answer.error_number = errno;
    }
    goto send; /* no descriptor */
  }
  if (fd < 0) {
    answer.error_number = errno;
    goto send;
  }
  fds[n_fds++] = fd;
  if (dir >= 0) /* LISTEN_UNIX: the socket, then its directory */
    fds[n_fds++] = dir;

send:
  if (answer.error_number == 0 && n_fds > 0) {
    struct cmsghdr *cmsg;

    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(n_fds * sizeof(int));
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
    memcpy(CMSG_DATA(cmsg), fds, n_fds * sizeof(int));
  }
  if (sendmsg(channel, &msg, MSG_NOSIGNAL) < 0)
    _exit(126);
  _exit(0);
}

/* Receives the answer and up to two descriptors (-1 where none came). */
static void
receive_answer(int channel, ChildAnswer *answer, int fds[2])
{
  char control[CMSG_SPACE(2 * sizeof(int))] = { 0 };
  struct iovec iov = { answer, sizeof *answer };
  struct msghdr msg = { .msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = control,
                        .msg_controllen = sizeof control };
  struct pollfd pfd = { .fd = channel, .events = POLLIN };
  struct cmsghdr *cmsg;
  ssize_t n;

  fds[0] = fds[1] = -1;
  answer->error_number = EIO;
  if (poll(&pfd, 1, (CHILD_TIMEOUT_SECONDS + 1) * 1000) <= 0) {
    answer->error_number = ETIMEDOUT;
    return;
  }
  n = recvmsg(channel, &msg, MSG_CMSG_CLOEXEC);
  for (cmsg = CMSG_FIRSTHDR(&msg); n >= 0 && cmsg != NULL;
       cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
      size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);

      memcpy(fds, CMSG_DATA(cmsg), MIN(count, 2) * sizeof(int));
      for (size_t i = 2; i < count; i++) { /* never sent; never kept */
        int extra;

        memcpy(&extra, CMSG_DATA(cmsg) + i * sizeof(int), sizeof extra);
        close(extra);
      }
    }
  }
  if (n != sizeof *answer)
    answer->error_number = EIO;
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

static const char *const verbs[] = {
  [OPEN_VIEW] = "open the file system view",
  [OPEN_FILE] = "open",
  [CONNECT_UNIX] = "connect to",
  [LISTEN_UNIX] = "create the socket",
  [UNLINK_SOCKET] = "remove",
};

/* Runs kind in a child that became user; fds[0] (and fds[1]) get what it
 * opened. FALSE with answer->error_number set when the child could not;
 * with error set (and answer->error_number 0) when no child could be
 * started. */
static gboolean
run_as_user(const TgIdentity *user, int given_fd, OpenKind kind, const char *what,
            const char *path, const char *name, dev_t dev, ino_t ino, int fds[2],
            ChildAnswer *answer, GError **error)
{
  static GOnce probe = G_ONCE_INIT;
  gid_t groups[MAX_GROUPS];
  int n_groups = MAX_GROUPS;
  int channel[2];
  int fork_errno;
  pid_t pid;

  g_once(&probe, probe_openat2, NULL);
  answer->error_number = 0;
  fds[0] = fds[1] = -1;
  if (getgrouplist(user->user_name, user->gid, groups, &n_groups) < 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "User %s is in more than %d groups",
                user->user_name, MAX_GROUPS);
    return FALSE;
  }
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, channel) < 0) {
    g_set_error(error, TG_ERROR,
                errno == EMFILE || errno == ENFILE || errno == ENOMEM
                    ? TG_ERROR_LIMIT_EXCEEDED
                    : TG_ERROR_FAILED,
                "Cannot %s '%s' as user %s: socketpair: %s", verbs[kind], what,
                user->user_name, g_strerror(errno));
    return FALSE;
  }

  pid = fork();
  fork_errno = errno;
  if (pid == 0)
    child_open_as_user(channel[1], given_fd, user, groups, n_groups, kind, path, name,
                       dev, ino);
  close(channel[1]);
  if (pid < 0) {
    /* EAGAIN: the daemon is at its task limit (TasksMax=, or the user's) */
    g_set_error(error, TG_ERROR,
                fork_errno == EAGAIN || fork_errno == ENOMEM ? TG_ERROR_LIMIT_EXCEEDED
                                                             : TG_ERROR_FAILED,
                "Cannot %s '%s' as user %s: no process to do it (fork: %s)", verbs[kind],
                what, user->user_name, g_strerror(fork_errno));
    close(channel[0]);
    return FALSE;
  }

  receive_answer(channel[0], answer, fds);
  close(channel[0]);
  reap_child(pid, answer->error_number == ETIMEDOUT);
  if (answer->error_number == 0 && fds[0] < 0 && kind != UNLINK_SOCKET)
    answer->error_number = EIO;
  if (answer->error_number == 0 && fds[1] < 0 && kind == LISTEN_UNIX)
    answer->error_number = EIO;
  if (answer->error_number != 0) {
    for (int i = 0; i < 2; i++) {
      if (fds[i] >= 0)
        close(g_steal_fd(&fds[i]));
    }
    return FALSE;
  }
  return TRUE;
}

static void
set_child_error(GError **error, const TgIdentity *user, OpenKind kind, const char *what,
                int child_errno)
{
  g_set_error(error, TG_ERROR,
              child_errno == EADDRINUSE ? TG_ERROR_ADDRESS_IN_USE
                                        : TG_ERROR_INVALID_ARGUMENT,
              "Cannot %s '%s' as user %s: %s", verbs[kind], what, user->user_name,
              g_strerror(child_errno));
}

static gboolean
check_absolute(const char *path, GError **error)
{
  if (path != NULL && path[0] == '/')
    return TRUE;
  g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "'%s' is not an absolute path",
              path != NULL ? path : "");
  return FALSE;
}

static int
open_as_user(const TgIdentity *user, int view_fd, OpenKind kind, const char *path,
             GError **error)
{
  ChildAnswer answer;
  int fds[2];

  if (!check_absolute(path, error))
    return -1;
  if (!run_as_user(user, view_fd, kind, path, path, NULL, 0, 0, fds, &answer, error)) {
    if (answer.error_number != 0)
      set_child_error(error, user, kind, path, answer.error_number);
    return -1;
  }
  return fds[0];
}

static int
own_view(GError **error)
{
  int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);

  if (fd < 0)
    g_set_error(error, TG_ERROR,
                errno == EMFILE || errno == ENFILE ? TG_ERROR_LIMIT_EXCEEDED
                                                   : TG_ERROR_FAILED,
                "Cannot open the root directory: %s", g_strerror(errno));
  return fd;
}

int
tg_open_view_as_user(const TgIdentity *user, GError **error)
{
  g_autofree char *proc_root = NULL;
  ChildAnswer answer;
  int fds[2];

  if (user->pid <= 0)
    return own_view(error);
  proc_root = g_strdup_printf("/proc/%d/root", (int)user->pid);
  if (run_as_user(user, -1, OPEN_VIEW, proc_root, proc_root, NULL, 0, 0, fds, &answer,
                  error))
    return fds[0];
  if (answer.error_number == 0)
    return -1; /* no child: error set */
  if (user->uid == 0 && (answer.error_number == EACCES || answer.error_number == EPERM))
    /* root: a process with capabilities the daemon does not have (the
     * kernel shows its root only to who could trace it); root's paths are
     * resolved in the daemon's own view */
    return own_view(error);
  if (answer.error_number == ENOENT || answer.error_number == ESRCH)
    g_set_error(
        error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
        "Paths are resolved as the calling process (pid %d) sees the file system, "
        "and it has exited",
        (int)user->pid);
  else
    g_set_error(
        error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
        "Paths are resolved as the calling process (pid %d) sees the file system, "
        "and user %s may not see its root (%s): it runs with other ids or groups "
        "than the account's, holds capabilities or is not dumpable",
        (int)user->pid, user->user_name, g_strerror(answer.error_number));
  return -1;
}

int
tg_connect_unix_as_user(const TgIdentity *user, int view_fd, const char *path,
                        GError **error)
{
  return open_as_user(user, view_fd, CONNECT_UNIX, path, error);
}

int
tg_open_file_as_user(const TgIdentity *user, int view_fd, const char *path,
                     GError **error)
{
  return open_as_user(user, view_fd, OPEN_FILE, path, error);
}

int
tg_listen_unix_as_user(const TgIdentity *user, int view_fd, const char *path,
                       TgSocketFile *file, GError **error)
{
  g_autofree char *directory = NULL;
  const char *name;
  ChildAnswer answer;
  int fds[2];

  if (!check_absolute(path, error))
    return -1;
  name = strrchr(path, '/') + 1;
  if (strlen(name) >= sizeof((struct sockaddr_un *)NULL)->sun_path ||
      strlen(path) >= sizeof((struct sockaddr_un *)NULL)->sun_path) {
    set_child_error(error, user, LISTEN_UNIX, path, ENAMETOOLONG);
    return -1;
  }
  if (name[0] == '\0' || g_str_equal(name, ".") || g_str_equal(name, "..")) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "'%s' does not name a file for the socket", path);
    return -1;
  }
  directory = name - path > 1 ? g_strndup(path, name - path - 1) : g_strdup("/");
  if (!run_as_user(user, view_fd, LISTEN_UNIX, path, directory, name, 0, 0, fds, &answer,
                   error)) {
    if (answer.error_number != 0)
      set_child_error(error, user, LISTEN_UNIX, path, answer.error_number);
    return -1;
  }
  fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  file->dir_fd = fds[1];
  file->name = g_strdup(name);
  file->dev = answer.dev;
  file->ino = answer.ino;
  return fds[0];
}

gboolean
tg_unlink_socket_as_user(const TgIdentity *user, const TgSocketFile *file, GError **error)
{
  ChildAnswer answer;
  int fds[2];

  if (file->dir_fd < 0 || file->name == NULL)
    return TRUE;
  if (!run_as_user(user, file->dir_fd, UNLINK_SOCKET, file->name, NULL, file->name,
                   file->dev, file->ino, fds, &answer, error)) {
    if (answer.error_number != 0)
      set_child_error(error, user, UNLINK_SOCKET, file->name, answer.error_number);
    return FALSE;
  }
  return TRUE;
}

void
tg_socket_file_clear(TgSocketFile *file)
{
  if (file->dir_fd >= 0)
    close(g_steal_fd(&file->dir_fd));
  g_clear_pointer(&file->name, g_free);
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
