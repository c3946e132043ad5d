/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The forward admission (src/daemon/admission.c): one transaction, one
 * rollback. Each step is made to fail in turn, and after each failure
 * nothing of the transaction is left: no listener descriptor, no guard,
 * no pin, no resolver slot. Binding is real (loopback sockets); the
 * firewall steps are counted by replacements (the real ones need the
 * kernel's nftables and are exercised by the integration tests). */
#include <dirent.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admission.h"
#include "listener.h"
#include "registry.h"
#include "tg-error.h"

/* ---- counted firewall steps ---- */

static int live_guards; /* listeners guarded and not unguarded */
static int live_pins;   /* connect-backs pinned and not unpinned */
static gboolean fail_guard;
static guint fail_pin_at = G_MAXUINT; /* the pin that fails (0: the first) */
static guint pins_tried;

static gboolean
counted_guard(TgDaemon *daemon, const TgPolicySubject *subject, uid_t owner,
              GPtrArray *listeners, const char *tunnel_id, GError **error)
{
  if (fail_guard) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_FAILED, "guard refused (test)");
    return FALSE;
  }
  live_guards += listeners->len;
  return TRUE;
}

static void
counted_unguard(TgDaemon *daemon, const char *address, guint16 port,
                const char *tunnel_id)
{
  live_guards--;
}

static gboolean
counted_pin(TgDaemon *daemon, const TgConnectBack *connect_back, const char *tunnel_id,
            GError **error)
{
  if (pins_tried++ == fail_pin_at) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_FAILED, "pin failed (test)");
    return FALSE;
  }
  live_pins++;
  return TRUE;
}

static void
counted_unpin(TgDaemon *daemon, const TgConnectBack *connect_back)
{
  live_pins--;
}

static const TgAdmissionSteps counted_steps = {
  .bind = tg_listener_bind,
  .guard = counted_guard,
  .unguard = counted_unguard,
  .pin = counted_pin,
  .unpin = counted_unpin,
};

/* ---- the world of one test ---- */

typedef struct {
  TgDaemon daemon;
  TgPolicySubject *subject;
  int fds_before;
  /* the outcome */
  gboolean done;
  GError *error;
  TgAdmission *admission;
  /* what still_wanted() does */
  TgPolicy *policy_mid_call; /* replaces the policy during the call */
  gboolean closed_mid_call;  /* the tunnel went away during the call */
} Fixture;

static int
count_fds(void)
{
  DIR *dir = opendir("/proc/self/fd");
  struct dirent *entry;
  int n = 0;

  g_assert_nonnull(dir);
  while ((entry = readdir(dir)) != NULL)
    n += entry->d_name[0] != '.';
  closedir(dir);
  return n;
}

static TgPolicy *
policy_from(const char *text)
{
  g_autoptr(GError) error = NULL;
  TgPolicy *policy = tg_policy_parse_string("test.conf", text, -1, &error);

  g_assert_no_error(error);
  return policy;
}

static void
fixture_set_up(Fixture *f, gconstpointer data)
{
  const char *const groups[] = { "users", NULL };

  live_guards = live_pins = 0;
  fail_guard = FALSE;
  fail_pin_at = G_MAXUINT;
  pins_tried = 0;
  f->daemon.policy = policy_from("AllowTcpForwarding yes\n");
  f->daemon.registry = tg_registry_new(NULL, NULL, NULL);
  f->subject = tg_policy_subject_new("alice", getuid(), groups);
  f->fds_before = count_fds();
}

static void
fixture_tear_down(Fixture *f, gconstpointer data)
{
  g_clear_pointer(&f->admission, tg_admission_free);
  g_clear_error(&f->error);
  /* nothing of the transaction is left */
  g_assert_cmpint(live_guards, ==, 0);
  g_assert_cmpint(live_pins, ==, 0);
  g_assert_cmpuint(tg_registry_n_resolving(f->daemon.registry), ==, 0);
  g_assert_cmpint(count_fds(), ==, f->fds_before);
  g_clear_pointer(&f->policy_mid_call, tg_policy_unref);
  tg_policy_subject_free(f->subject);
  tg_registry_free(f->daemon.registry);
  tg_policy_unref(f->daemon.policy);
}

static gboolean
still_wanted(TgAdmission *admission, gpointer user_data, GError **error)
{
  Fixture *f = user_data;

  if (f->policy_mid_call != NULL) {
    tg_policy_unref(f->daemon.policy);
    f->daemon.policy = g_steal_pointer(&f->policy_mid_call);
  }
  if (f->closed_mid_call) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_DISCONNECTED, "Tunnel 1 is closed");
    return FALSE;
  }
  tg_admission_set_first_index(admission, 3);
  return TRUE;
}

static void
done(TgAdmission *admission, const GError *error, gpointer user_data)
{
  Fixture *f = user_data;

  g_assert_false(f->done);
  f->done = TRUE;
  f->admission = admission;
  if (error != NULL)
    f->error = g_error_copy(error);
}

/* Runs an admission of @specs with @granted, and waits for its end. */
static void
admit(Fixture *f, const char *const *specs, TgAction granted)
{
  g_autoptr(GPtrArray) forwards =
      g_ptr_array_new_with_free_func((GDestroyNotify)tg_forward_free);
  TgAdmission *admission;

  for (guint i = 0; specs[i] != NULL; i++) {
    g_autoptr(GError) error = NULL;
    TgForward *forward = tg_forward_parse(specs[i], &error);

    g_assert_no_error(error);
    g_ptr_array_add(forwards, forward);
  }
  admission =
      tg_admission_new(&f->daemon, getuid(), f->subject, "1", forwards, granted, TRUE);
  tg_admission_set_steps(admission, &counted_steps);
  tg_admission_run(admission, still_wanted, done, f);
  while (!f->done)
    g_main_context_iteration(NULL, TRUE);
}

/* A port on 127.0.0.1 that is free now. */
static guint16
free_port(void)
{
  struct sockaddr_in address = { .sin_family = AF_INET,
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t length = sizeof address;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  g_assert_cmpint(fd, >=, 0);
  g_assert_cmpint(bind(fd, (struct sockaddr *)&address, sizeof address), ==, 0);
  g_assert_cmpint(getsockname(fd, (struct sockaddr *)&address, &length), ==, 0);
  close(fd);
  return ntohs(address.sin_port);
}

static const char *const mixed[] = {
  "L 127.0.0.1:0:intra:80",
  "R 0:127.0.0.1:9",
  "R 0:127.0.0.1:10",
  NULL,
};

static void
test_success(Fixture *f, gconstpointer data)
{
  g_autoptr(GPtrArray) listeners = NULL;
  g_autoptr(GPtrArray) connect_backs = NULL;

  admit(f, mixed, TG_ACTION_OPEN_REMOTE);
  g_assert_no_error(f->error);
  g_assert_cmpint(live_guards, ==, 1);
  g_assert_cmpint(live_pins, ==, 2);
  listeners = tg_admission_take_listeners(f->admission);
  connect_backs = tg_admission_take_connect_backs(f->admission);
  g_assert_cmpuint(listeners->len, ==, 1);
  g_assert_cmpuint(connect_backs->len, ==, 2);
  /* indexed where still_wanted() said the forwards go */
  g_assert_cmpuint(((TgListener *)listeners->pdata[0])->forward_index, ==, 3);
  g_assert_cmpuint(((TgConnectBack *)connect_backs->pdata[0])->forward_index, ==, 4);
  g_assert_cmpuint(((TgConnectBack *)connect_backs->pdata[1])->forward_index, ==, 5);
  g_assert_cmpuint(tg_registry_n_resolving(f->daemon.registry), ==, 0);
  /* taken: the caller now owns the elements; the test plays the tunnel */
  live_guards = live_pins = 0;
  g_ptr_array_set_size(listeners, 0);
}

static void
test_bind_in_use(Fixture *f, gconstpointer data)
{
  guint16 port = free_port();
  g_autofree char *busy = g_strdup_printf("L 127.0.0.1:%u:intra:22", port);
  const char *const specs[] = { "L 127.0.0.1:0:intra:80", "R 0:127.0.0.1:9", busy, NULL };
  struct sockaddr_in address = { .sin_family = AF_INET,
                                 .sin_port = htons(port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  int holder = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  g_assert_cmpint(bind(holder, (struct sockaddr *)&address, sizeof address), ==, 0);
  g_assert_cmpint(listen(holder, 1), ==, 0);
  f->fds_before++; /* the holder, closed after the checks */
  admit(f, specs, TG_ACTION_OPEN_REMOTE);
  g_assert_error(f->error, TG_ERROR, TG_ERROR_ADDRESS_IN_USE);
  g_assert_cmpint(live_guards, ==, 0);
  g_assert_cmpint(live_pins, ==, 0);
  g_assert_cmpint(count_fds(), ==, f->fds_before);
  close(holder);
  f->fds_before--;
}

/* A restored tunnel's port-0 listener binds the port it had; the policy
 * still decides on the forward as asked (port 0). */
static void
test_listen_port(Fixture *f, gconstpointer data)
{
  const char *const specs[] = { "L 127.0.0.1:0:intra:80", "R 0:127.0.0.1:9",
                                "D 127.0.0.1:0", NULL };
  g_autoptr(GPtrArray) forwards =
      g_ptr_array_new_with_free_func((GDestroyNotify)tg_forward_free);
  g_autoptr(GPtrArray) listeners = NULL;
  g_autoptr(GPtrArray) connect_backs = NULL;
  guint16 port = free_port();
  TgAdmission *admission;

  tg_policy_unref(f->daemon.policy);
  f->daemon.policy = policy_from("PermitListen 127.0.0.1:0 localhost:0\n");
  for (guint i = 0; specs[i] != NULL; i++)
    g_ptr_array_add(forwards, tg_forward_parse(specs[i], NULL));
  admission = tg_admission_new(&f->daemon, getuid(), f->subject, "1", forwards,
                               TG_ACTION_OPEN_REMOTE, TRUE);
  tg_admission_set_steps(admission, &counted_steps);
  tg_admission_set_listen_port(admission, 0, port);
  tg_admission_set_listen_port(admission, 1, 4242); /* R: the server's port */
  tg_admission_run(admission, NULL, done, f);
  while (!f->done)
    g_main_context_iteration(NULL, TRUE);
  g_assert_no_error(f->error);
  listeners = tg_admission_take_listeners(f->admission);
  connect_backs = tg_admission_take_connect_backs(f->admission);
  g_assert_cmpuint(listeners->len, ==, 2);
  g_assert_cmpuint(((TgListener *)listeners->pdata[0])->forward_index, ==, 0);
  g_assert_cmpuint(((TgListener *)listeners->pdata[0])->port, ==, port);
  /* the D listener was not given a port: the kernel chose one */
  g_assert_cmpuint(((TgListener *)listeners->pdata[1])->forward_index, ==, 2);
  g_assert_cmpuint(((TgListener *)listeners->pdata[1])->port, !=, 0);
  g_assert_cmpuint(((TgListener *)listeners->pdata[1])->port, !=, port);
  live_guards = live_pins = 0; /* taken: the test plays the tunnel */
  g_ptr_array_set_size(listeners, 0);
}

static void
test_guard_refused(Fixture *f, gconstpointer data)
{
  fail_guard = TRUE;
  admit(f, mixed, TG_ACTION_OPEN_REMOTE);
  g_assert_error(f->error, TG_ERROR, TG_ERROR_FAILED);
  g_assert_true(g_str_has_prefix(f->error->message, "Cannot guard the listeners"));
  g_assert_cmpuint(pins_tried, ==, 0);
}

static void
test_pin_failed(Fixture *f, gconstpointer data)
{
  fail_pin_at = 1; /* the first pin holds, the second fails */
  admit(f, mixed, TG_ACTION_OPEN_REMOTE);
  g_assert_error(f->error, TG_ERROR, TG_ERROR_FAILED);
  g_assert_cmpstr(f->error->message, ==, "pin failed (test)");
  g_assert_cmpuint(pins_tried, ==, 2);
}

static void
test_policy_forbids_mid_call(Fixture *f, gconstpointer data)
{
  f->policy_mid_call = policy_from("AllowTcpForwarding local\n");
  admit(f, mixed, TG_ACTION_OPEN_REMOTE);
  g_assert_error(f->error, TG_ERROR, TG_ERROR_POLICY_DENIED);
  g_assert_nonnull(strstr(f->error->message, "test.conf:1"));
}

static void
test_policy_widens_actions_mid_call(Fixture *f, gconstpointer data)
{
  const char *const specs[] = { "L 0:intra:80", NULL };

  /* GatewayPorts yes makes the listener listen on every address: bind-any,
   * which polkit was not asked for */
  f->policy_mid_call = policy_from("GatewayPorts yes\n");
  admit(f, specs, TG_ACTION_NONE);
  g_assert_error(f->error, TG_ERROR, TG_ERROR_NOT_AUTHORIZED);
}

static void
test_tunnel_closed_mid_call(Fixture *f, gconstpointer data)
{
  f->closed_mid_call = TRUE;
  admit(f, mixed, TG_ACTION_OPEN_REMOTE);
  g_assert_error(f->error, TG_ERROR, TG_ERROR_DISCONNECTED);
  g_assert_cmpuint(pins_tried, ==, 0);
}

static void
test_daemon_stopping(Fixture *f, gconstpointer data)
{
  tg_registry_stop(f->daemon.registry);
  admit(f, mixed, TG_ACTION_OPEN_REMOTE);
  g_assert_error(f->error, TG_ERROR, TG_ERROR_FAILED);
  g_assert_cmpstr(f->error->message, ==, "tunnelgated is stopping");
}

/* A reconnect's readmission of @specs (their listeners exist already):
 * nothing is bound, guarded, pinned or resolved. */
static void
readmit(Fixture *f, const char *const *specs, TgAction granted, const char *server)
{
  g_autoptr(GPtrArray) forwards =
      g_ptr_array_new_with_free_func((GDestroyNotify)tg_forward_free);
  TgAdmission *admission;

  for (guint i = 0; specs[i] != NULL; i++)
    g_ptr_array_add(forwards, tg_forward_parse(specs[i], NULL));
  admission =
      tg_admission_new(&f->daemon, getuid(), f->subject, "1", forwards, granted, TRUE);
  tg_admission_set_steps(admission, &counted_steps);
  tg_admission_set_readmission(admission);
  if (server != NULL)
    tg_admission_set_server(admission, server, 22, NULL, FALSE);
  tg_admission_run(admission, NULL, done, f);
  /* nothing to resolve: the answer comes before tg_admission_run() returns */
  g_assert_true(f->done);
}

static void
test_readmission_drops_one_forward(Fixture *f, gconstpointer data)
{
  const char *const specs[] = { "L 127.0.0.1:0:intra:80", "L 127.0.0.1:0:db:5432",
                                "R 0:127.0.0.1:9", NULL };

  tg_policy_unref(f->daemon.policy);
  f->daemon.policy = policy_from("PermitOpen intra:80\n");
  readmit(f, specs, TG_ACTION_OPEN_REMOTE, "gw");
  g_assert_no_error(f->error);
  g_assert_null(tg_admission_get_refusal(f->admission, 0));
  g_assert_nonnull(strstr(tg_admission_get_refusal(f->admission, 1), "PermitOpen"));
  g_assert_nonnull(strstr(tg_admission_get_refusal(f->admission, 1), "test.conf:1"));
  g_assert_null(tg_admission_get_refusal(f->admission, 2));
  /* the listeners and pins of a reconnecting tunnel stay as they are */
  g_assert_cmpint(live_guards, ==, 0);
  g_assert_cmpint(live_pins, ==, 0);
  g_assert_cmpuint(pins_tried, ==, 0);
  g_assert_cmpint(count_fds(), ==, f->fds_before);
}

static void
test_readmission_needs_no_more_actions(Fixture *f, gconstpointer data)
{
  const char *const specs[] = { "L 0:intra:80", "L 127.0.0.1:0:intra:81", NULL };

  /* opened when GatewayPorts was no: the first now listens on every
   * address (bind-any), which polkit did not grant */
  tg_policy_unref(f->daemon.policy);
  f->daemon.policy = policy_from("GatewayPorts yes\n");
  readmit(f, specs, TG_ACTION_NONE, NULL);
  g_assert_no_error(f->error);
  g_assert_nonnull(strstr(tg_admission_get_refusal(f->admission, 0),
                          "now needs more than was authorized"));
  g_assert_null(tg_admission_get_refusal(f->admission, 1));
}

static void
test_readmission_server_refused(Fixture *f, gconstpointer data)
{
  const char *const specs[] = { "L 127.0.0.1:0:intra:80", NULL };

  /* the server and host key fail the whole readmission: the tunnel ends */
  tg_policy_unref(f->daemon.policy);
  f->daemon.policy = policy_from("PermitServer other\n");
  readmit(f, specs, TG_ACTION_NONE, "gw");
  g_assert_error(f->error, TG_ERROR, TG_ERROR_POLICY_DENIED);
  g_assert_nonnull(strstr(f->error->message, "PermitServer"));
}

static void
warmed_up(GObject *source, GAsyncResult *result, gpointer user_data)
{
  *(gboolean *)user_data = TRUE;
}

static void
nothing(GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
  g_task_return_boolean(task, TRUE);
}

/* The main context's wake-up descriptor and GLib's thread pool are made on
 * first use and kept: make them before any test counts descriptors. */
static void
warm_up(void)
{
  gboolean over = FALSE;
  g_autoptr(GTask) task = g_task_new(NULL, NULL, warmed_up, &over);

  g_task_run_in_thread(task, nothing);
  while (!over)
    g_main_context_iteration(NULL, TRUE);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  warm_up();
#define ADD(path, fn)                                                                    \
  g_test_add("/admission/" path, Fixture, NULL, fixture_set_up, fn, fixture_tear_down)
  ADD("success", test_success);
  ADD("bind-in-use", test_bind_in_use);
  ADD("listen-port", test_listen_port);
  ADD("guard-refused", test_guard_refused);
  ADD("pin-failed", test_pin_failed);
  ADD("readmission-drops-one-forward", test_readmission_drops_one_forward);
  ADD("readmission-needs-no-more-actions", test_readmission_needs_no_more_actions);
  ADD("readmission-server-refused", test_readmission_server_refused);
  ADD("policy-forbids-mid-call", test_policy_forbids_mid_call);
  ADD("policy-widens-actions-mid-call", test_policy_widens_actions_mid_call);
  ADD("tunnel-closed-mid-call", test_tunnel_closed_mid_call);
  ADD("daemon-stopping", test_daemon_stopping);
  return g_test_run();
}
