/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The firewall module against the real kernel. Root only (exit 77 otherwise).
 * Every test makes its own network namespace (unshare) and, for traffic, a peer
 * namespace joined by a veth pair: the host's ruleset is never touched, which
 * main() checks at the end. The table is read back with `nft -j` (nft-summary.py). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "firewall-private.h"
#include "firewall.h"
#include "tg-error.h"

#define SUMMARY_SCRIPT TG_FIREWALL_TEST_DIR "/nft-summary.py"
#define PEER_ADDRESS "10.77.0.2"
#define LOCAL_ADDRESS "10.77.0.1"
#define SECOND_ADDRESS "10.77.0.3"

/* ---- helpers ---- */

static char *
run_shell(const char *command, int *status)
{
  const char *argv[] = { "/bin/sh", "-c", command, NULL };
  g_autoptr(GError) error = NULL;
  char *out = NULL;
  int wait_status = 0;

  g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL,
                             NULL, &out, NULL, &wait_status, &error));
  if (status != NULL)
    *status = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : -1;
  return out;
}

static void
run_ok(const char *command)
{
  int status;
  g_autofree char *out = run_shell(command, &status);
  if (status != 0)
    g_error("'%s' failed (%d)", command, status);
}

static char *
summary(void)
{
  return run_shell(
      "nft -j list table inet tunnelgate 2>/dev/null | /usr/bin/python3 " SUMMARY_SCRIPT,
      NULL);
}

static void
assert_line(const char *text, const char *line)
{
  g_autofree char *needle = g_strconcat(line, "\n", NULL);
  if (!g_str_has_prefix(text, needle) && strstr(text, needle) == NULL &&
      !g_str_has_prefix(text, line))
    g_error("line '%s' missing from:\n%s", line, text);
}

/* A fresh network namespace for the calling test (the previous one dies). */
static void
new_netns(void)
{
  g_assert_cmpint(unshare(CLONE_NEWNET), ==, 0);
  run_ok("ip link set lo up");
}

static TgFirewallAddress
address4(const char *text, guint8 prefix)
{
  TgFirewallAddress address = { AF_INET, prefix, { 0 } };
  g_assert_cmpint(inet_pton(AF_INET, text, address.bytes), ==, 1);
  return address;
}

static const TgPortRange default_ports[] = { { 22, 22 }, { 2222, 2223 } };

static TgFirewallConfig
default_config(void)
{
  TgFirewallConfig config = {
    .egress_lockdown = TRUE,
    .ssh_ports = default_ports,
    .n_ssh_ports = G_N_ELEMENTS(default_ports),
    .listener_guard = TRUE,
    .connect_back_pinning = TRUE,
    .log_prefix = TG_FIREWALL_LOG_PREFIX,
    .ownership = TG_FIREWALL_OWNERSHIP_NEVER,
  };
  return config;
}

static TgFirewall *
new_firewall(const TgFirewallConfig *config)
{
  g_autoptr(GError) error = NULL;
  TgFirewall *firewall = tg_firewall_new(config, &error);
  g_assert_no_error(error);
  return firewall;
}

/* ---- peer namespace and connections ---- */

typedef struct {
  pid_t holder; /* sleeps in the peer namespace */
  int netns;
  int self;
} Peer;

static void
peer_setup(Peer *peer)
{
  int ready[2];
  char byte;
  g_autofree char *command = NULL;

  new_netns();
  g_assert_cmpint(pipe(ready), ==, 0);
  peer->holder = fork();
  if (peer->holder == 0) {
    int null = open("/dev/null", O_RDWR);
    /* never outlive the test, never hold its output open */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(null, STDOUT_FILENO);
    dup2(null, STDERR_FILENO);
    if (unshare(CLONE_NEWNET) != 0)
      _exit(1);
    (void)!write(ready[1], "x", 1);
    pause();
    _exit(0);
  }
  g_assert_cmpint(read(ready[0], &byte, 1), ==, 1);
  close(ready[0]);
  close(ready[1]);
  command = g_strdup_printf(
      "ip link add tgv0 type veth peer name tgv1 && ip link set tgv1 netns %d && "
      "ip addr add " LOCAL_ADDRESS "/24 dev tgv0 && ip link set tgv0 up && "
      "nsenter -t %d -n sh -c 'ip link set lo up && ip addr add " PEER_ADDRESS
      "/24 dev tgv1 && ip link set tgv1 up'",
      peer->holder, peer->holder);
  run_ok(command);
  g_free(command);
  command = g_strdup_printf("/proc/%d/ns/net", peer->holder);
  peer->netns = open(command, O_RDONLY | O_CLOEXEC);
  peer->self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  g_assert_cmpint(peer->netns, >=, 0);
}

static void
peer_teardown(Peer *peer)
{
  kill(peer->holder, SIGKILL);
  waitpid(peer->holder, NULL, 0);
  close(peer->netns);
  close(peer->self);
}

/* A TCP listener in namespace netns (-1: ours). */
static int
listen_on(const Peer *peer, int netns, const char *address, guint16 port)
{
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
  int one = 1;
  int fd;

  if (netns >= 0)
    g_assert_cmpint(setns(netns, CLONE_NEWNET), ==, 0);
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  inet_pton(AF_INET, address, &sin.sin_addr);
  g_assert_cmpint(bind(fd, (struct sockaddr *)&sin, sizeof sin), ==, 0);
  g_assert_cmpint(listen(fd, 64), ==, 0);
  if (netns >= 0)
    g_assert_cmpint(setns(peer->self, CLONE_NEWNET), ==, 0);
  return fd;
}

/* Connects in a child (from namespace netns, with mark, as uid); 0 or errno. */
static int
try_connect(int netns, const char *address, guint16 port, guint32 mark, uid_t uid)
{
  pid_t child = fork();
  int status;

  if (child == 0) {
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
    struct pollfd pfd;
    int fd, error = 0;
    socklen_t length = sizeof error;

    if (netns >= 0 && setns(netns, CLONE_NEWNET) != 0)
      _exit(200);
    /* the socket's owner (meta skuid) is whoever creates it */
    if (uid != 0 &&
        (setresgid(65534, 65534, 65534) != 0 || setresuid(uid, uid, uid) != 0))
      _exit(202);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (mark != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0)
      _exit(201);
    inet_pton(AF_INET, address, &sin.sin_addr);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0)
      _exit(0);
    if (errno != EINPROGRESS)
      _exit(errno);
    pfd.fd = fd;
    pfd.events = POLLOUT;
    if (poll(&pfd, 1, 2000) != 1)
      _exit(ETIMEDOUT);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
    _exit(error);
  }
  g_assert_cmpint(waitpid(child, &status, 0), ==, child);
  g_assert_true(WIFEXITED(status));
  return WEXITSTATUS(status);
}

static uid_t
nobody_uid(void)
{
  struct passwd *nobody = getpwnam("nobody");
  return nobody != NULL ? nobody->pw_uid : 65534;
}

/* ---- table tests ---- */

/* A listener on every IPv4 address guarded from other hosts only, as the
 * daemon makes for GatewayPorts with ListenerSources. */
static gboolean
add_remote(TgFirewall *firewall, guint16 port, const TgFirewallAddress *sources,
           gsize n_sources, const char *tunnel_id, GError **error)
{
  TgFirewallListener listener = {
    .family = AF_INET,
    .port = port,
    .guard_remote = TRUE,
    .sources = sources,
    .n_sources = n_sources,
    .tunnel_id = tunnel_id,
  };

  return tg_firewall_add_listener(firewall, &listener, error);
}

static void
test_install(void)
{
  const TgFirewallAddress servers[] = { address4("10.1.2.0", 24),
                                        address4("10.9.9.9", 32) };
  const guint32 uids[] = { 4242 };
  TgFirewallConfig config = default_config();
  g_autoptr(TgFirewall) firewall = NULL;
  g_autofree char *text = NULL;

  new_netns();
  config.ssh_servers = servers;
  config.n_ssh_servers = G_N_ELEMENTS(servers);
  config.exempt_uids = uids;
  config.n_exempt_uids = 1;
  firewall = new_firewall(&config);
  text = summary();
  assert_line(text, "chain output type=filter hook=output prio=-10 policy=accept");
  assert_line(text, "chain input type=filter hook=input prio=-10 policy=accept");
  assert_line(text, "chain egress");
  assert_line(text, "chain pin");
  assert_line(text, "chain guard");
  assert_line(text, "set ssh_ports type=inet_service flags=interval elems=22,2222-2223");
  assert_line(
      text,
      "set ssh_servers_v4 type=ipv4_addr flags=interval elems=10.1.2.0/24,10.9.9.9");
  assert_line(text, "set exempt_uids type=uid flags= elems=4242");
  assert_line(text, "set listener_wild_sources_v4 type=ipv4_addr . inet_service flags= "
                    "elems=");
  assert_line(text, "set listener_sources_v4 type=ipv4_addr . ipv4_addr . inet_service "
                    "flags= elems=");
  assert_line(text, "set listener_users_v4 type=uid . ipv4_addr . inet_service flags= "
                    "elems=");
  assert_line(text, "counter lockdown_rejects packets=0");
  assert_line(text, "counter owner_rejects packets=0");
  assert_line(text, "rules egress=6");
  assert_line(text, "rules guard=8");
  assert_line(text, "rules owners=7");
  assert_line(text, "rules pin=3");
}

static void
test_replace_stale(void)
{
  TgFirewallConfig config = default_config();
  g_autoptr(TgFirewall) firewall = NULL;
  g_autofree char *text = NULL;

  new_netns();
  /* what a killed daemon (of another version) might have left behind */
  run_ok(
      "nft 'add table inet tunnelgate; add set inet tunnelgate junk { type ipv4_addr; "
      "elements = { 1.2.3.4 } }; add chain inet tunnelgate junkchain { type filter "
      "hook output priority 0; policy drop; }; add set inet tunnelgate ssh_ports { type "
      "inet_service; elements = { 99 } }'");
  firewall = new_firewall(&config);
  text = summary();
  g_assert_null(strstr(text, "junk"));
  assert_line(text, "set ssh_ports type=inet_service flags=interval elems=22,2222-2223");
}

static void
test_elements(void)
{
  TgFirewallConfig config = default_config();
  g_autoptr(TgFirewall) firewall = NULL;
  g_autoptr(GError) error = NULL;
  const TgFirewallAddress sources[] = { address4("10.0.0.2", 32),
                                        address4("10.0.0.3", 32) };
  TgFirewallAddress destination = address4("192.0.2.7", 32);
  const guint32 uids[] = { 1000, 1001 };
  const TgFirewallAddress servers[] = { address4("198.51.100.0", 24) };
  g_autofree char *text = NULL;
  g_autofree char *description = NULL;

  new_netns();
  firewall = new_firewall(&config);
  g_assert_true(add_remote(firewall, 8080, sources, 2, "tunnel-a", &error));
  g_assert_no_error(error);
  g_assert_true(add_remote(firewall, 8081, NULL, 0, "tunnel-b", &error));
  g_assert_true(
      tg_firewall_add_connect_back(firewall, &destination, 5432, "tunnel-c", &error));
  g_assert_true(tg_firewall_set_exempt_uids(firewall, uids, 2, &error));
  g_assert_true(tg_firewall_update_servers(firewall, servers, 1, &error));
  g_assert_no_error(error);
  text = summary();
  assert_line(text, "set listener_ports type=nf_proto . inet_service flags= "
                    "elems=ipv4 . 8080,ipv4 . 8081");
  assert_line(text, "set listener_wild_sources_v4 type=ipv4_addr . inet_service flags= "
                    "elems=10.0.0.2 . 8080,10.0.0.3 . 8080");
  assert_line(text, "set connect_back_v4 type=ipv4_addr . inet_service flags= "
                    "elems=192.0.2.7 . 5432");
  assert_line(text, "set exempt_uids type=uid flags= elems=1000,1001");
  assert_line(text,
              "set ssh_servers_v4 type=ipv4_addr flags=interval elems=198.51.100.0/24");
  description = tg_firewall_describe(firewall);
  g_assert_nonnull(strstr(description,
                          "listener 0.0.0.0 port 8080 (tunnel tunnel-a): other hosts "
                          "10.0.0.2, 10.0.0.3; local users any\n"));
  g_assert_nonnull(
      strstr(description, "connect-back 192.0.2.7 port 5432 (tunnel tunnel-c)"));

  g_assert_true(tg_firewall_remove_listener(firewall, AF_INET, NULL, 8080, &error));
  g_assert_true(tg_firewall_remove_connect_back(firewall, &destination, 5432, &error));
  g_assert_no_error(error);
  g_free(text);
  text = summary();
  assert_line(text,
              "set listener_ports type=nf_proto . inet_service flags= elems=ipv4 . 8081");
  assert_line(text, "set listener_wild_sources_v4 type=ipv4_addr . inet_service flags= "
                    "elems=");
  assert_line(text, "set connect_back_v4 type=ipv4_addr . inet_service flags= elems=");
  g_assert_false(tg_firewall_remove_listener(firewall, AF_INET, NULL, 8080, &error));
  g_assert_error(error, TG_ERROR, TG_ERROR_NOT_FOUND);
}

static void
test_invalid_input(void)
{
  TgFirewallConfig config = default_config();
  const TgPortRange zero[] = { { 0, 22 } };
  TgFirewallAddress bad_prefix = address4("10.0.0.0", 33);
  TgFirewallAddress source = address4("10.0.0.0", 8);
  g_autoptr(TgFirewall) firewall = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *before = NULL;
  g_autofree char *after = NULL;
  g_autoptr(GArray) many = g_array_new(FALSE, TRUE, sizeof(TgFirewallAddress));

  new_netns();
  config.ssh_ports = zero;
  config.n_ssh_ports = 1;
  g_assert_null(tg_firewall_new(&config, &error));
  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  g_clear_error(&error);
  after = summary();
  g_assert_cmpstr(after, ==, "no table\n");
  g_clear_pointer(&after, g_free);

  config = default_config();
  config.ssh_servers = &bad_prefix;
  config.n_ssh_servers = 1;
  g_assert_null(tg_firewall_new(&config, &error));
  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  g_clear_error(&error);

  config = default_config();
  firewall = new_firewall(&config);
  g_assert_true(add_remote(firewall, 9000, NULL, 0, "t", &error));
  before = summary();
  g_assert_false(add_remote(firewall, 0, NULL, 0, "t", &error));
  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  g_clear_error(&error);
  g_assert_false(add_remote(firewall, 9001, &source, 1, "t", &error));
  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  g_clear_error(&error);
  g_assert_false(tg_firewall_update_servers(firewall, &bad_prefix, 1, &error));
  g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
  g_clear_error(&error);

  /* A batch the kernel refuses at its very end changes nothing. */
  tg_firewall_test_poison_next_batch(firewall);
  g_assert_false(add_remote(firewall, 9002, &source, 0, "t", &error));
  g_assert_error(error, TG_ERROR, TG_ERROR_FAILED);
  g_test_message("refused: %s", error->message);
  g_clear_error(&error);
  for (guint i = 0; i < 10000; i++) {
    TgFirewallAddress server = { AF_INET, 32, { 10, 100, i / 256, i % 256 } };
    g_array_append_val(many, server);
  }
  tg_firewall_test_poison_next_batch(firewall);
  g_assert_false(tg_firewall_update_servers(firewall, (TgFirewallAddress *)many->data,
                                            many->len, &error));
  g_clear_error(&error);
  after = summary();
  g_assert_cmpstr(after, ==, before);

  /* 10,000 listeners: all there, then a refused full re-install leaves them all. */
  for (guint port = 10000; port < 20000; port++)
    g_assert_true(add_remote(firewall, (guint16)port, NULL, 0, "many", &error));
  g_clear_pointer(&before, g_free);
  before = summary();
  g_assert_nonnull(strstr(before, ",ipv4 . 19999,"));
  g_clear_pointer(&firewall, tg_firewall_free);
  config.ssh_servers = (TgFirewallAddress *)many->data;
  config.n_ssh_servers = many->len;
  config.n_ssh_ports = 1;
  config.ssh_ports = zero;
  g_assert_null(tg_firewall_new(&config, &error));
  g_clear_error(&error);
  g_clear_pointer(&after, g_free);
  after = summary();
  g_assert_cmpstr(after, ==, before);
}

static void
test_owner(void)
{
  TgFirewallConfig config = default_config();
  g_autoptr(TgFirewall) firewall = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *text = NULL;
  int status;
  g_autofree char *out = NULL;

  new_netns();
  config.ownership = TG_FIREWALL_OWNERSHIP_AUTO;
  firewall = new_firewall(&config);
  g_test_message("kernel table ownership (owner|persist): %s",
                 tg_firewall_is_owner(firewall) ? "yes" : "no");
  text = summary();
  if (!tg_firewall_is_owner(firewall)) {
    g_assert_null(strstr(text, "flags=owner"));
    return;
  }
  assert_line(text, "table tunnelgate flags=owner,unknown"); /* nft 1.0.6: no "persist" */
  /* nobody else may change it while we hold it */
  out = run_shell("nft delete table inet tunnelgate", &status);
  g_assert_cmpint(status, !=, 0);
  out = (g_free(out),
         run_shell("nft delete element inet tunnelgate ssh_ports '{ 22 }'", &status));
  g_assert_cmpint(status, !=, 0);
  /* fail closed: the daemon's end leaves the table (persist), not owned */
  g_clear_pointer(&firewall, tg_firewall_free);
  /* nft 1.0.6 cannot print a table whose only flag is persist as JSON (it
   * stops after "flags":): read the text listing here */
  g_clear_pointer(&text, g_free);
  text = run_shell("nft list table inet tunnelgate", &status);
  g_assert_cmpint(status, ==, 0);
  g_assert_nonnull(strstr(text, "elements = { 22, 2222-2223 }"));
  g_assert_null(strstr(text, "flags owner"));
  /* the next daemon replaces the orphan and owns the new table */
  firewall = new_firewall(&config);
  g_assert_true(tg_firewall_is_owner(firewall));
  g_clear_pointer(&firewall, tg_firewall_free);
  g_assert_true(tg_firewall_remove_table(&error));
  g_assert_no_error(error);
  g_clear_pointer(&text, g_free);
  text = summary();
  g_assert_cmpstr(text, ==, "no table\n");
}

static gboolean
wait_for_repairs(TgFirewall *firewall, guint count)
{
  gint64 deadline = g_get_monotonic_time() + G_USEC_PER_SEC;

  while (tg_firewall_get_repair_count(firewall) < count &&
         g_get_monotonic_time() < deadline) {
    if (!g_main_context_iteration(NULL, FALSE))
      g_usleep(5000);
  }
  return tg_firewall_get_repair_count(firewall) >= count;
}

static void
test_repair(void)
{
  TgFirewallConfig config = default_config();
  g_autoptr(TgFirewall) firewall = NULL;
  g_autoptr(GError) error = NULL;
  TgFirewallAddress source = address4("10.0.0.9", 32);
  g_autofree char *before = NULL;
  g_autofree char *after = NULL;

  /* the repair is logged as a warning: expected here */
  g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
  new_netns();
  firewall = new_firewall(&config);
  g_assert_true(tg_firewall_watch(firewall, NULL, &error));
  g_assert_true(add_remote(firewall, 8080, &source, 1, "t", &error));
  g_assert_no_error(error);
  before = summary();
  while (g_main_context_iteration(NULL, FALSE)) /* our own events: no repair */
    ;
  g_assert_cmpuint(tg_firewall_get_repair_count(firewall), ==, 0);

  run_ok("nft delete table inet tunnelgate");
  g_assert_true(wait_for_repairs(firewall, 1));
  after = summary();
  g_assert_cmpstr(after, ==, before);

  run_ok("nft delete element inet tunnelgate listener_ports '{ ipv4 . 8080 }'");
  g_assert_true(wait_for_repairs(firewall, 2));
  g_clear_pointer(&after, g_free);
  after = summary();
  g_assert_cmpstr(after, ==, before);

  run_ok("nft add rule inet tunnelgate egress accept");
  g_assert_true(wait_for_repairs(firewall, 3));
  g_clear_pointer(&after, g_free);
  after = summary();
  g_assert_cmpstr(after, ==, before);
}

/* ---- traffic ---- */

static void
test_traffic_lockdown(void)
{
  Peer peer;
  TgFirewallConfig config = default_config();
  const TgFirewallAddress server = address4(PEER_ADDRESS, 32);
  g_autoptr(TgFirewall) firewall = NULL;
  g_autoptr(GError) error = NULL;
  TgFirewallCounters counters;
  uid_t nobody = nobody_uid();
  guint32 exempt = nobody;
  int ssh, custom, other;

  peer_setup(&peer);
  ssh = listen_on(&peer, peer.netns, PEER_ADDRESS, 22);
  custom = listen_on(&peer, peer.netns, PEER_ADDRESS, 2222);
  other = listen_on(&peer, peer.netns, PEER_ADDRESS, 4443);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 22, 0, 0), ==, 0); /* no firewall yet */

  config.ssh_servers = &server;
  config.n_ssh_servers = 1;
  firewall = new_firewall(&config);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 22, 0, 0), ==, ECONNREFUSED);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 2222, 0, 0), ==, ECONNREFUSED);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 4443, 0, 0), ==, ECONNREFUSED);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 22, 0, nobody), ==, ECONNREFUSED);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 22, TG_FIREWALL_DAEMON_MARK, 0), ==, 0);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 2222, TG_FIREWALL_DAEMON_MARK, 0), ==, 0);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 22, 0x1234, 0), ==, ECONNREFUSED);
  g_assert_true(tg_firewall_read_counters(firewall, &counters, &error));
  g_assert_cmpuint(counters.lockdown_packets, ==, 5);

  g_assert_true(tg_firewall_set_exempt_uids(firewall, &exempt, 1, &error));
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 22, 0, nobody), ==, 0);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 22, 0, 0), ==, ECONNREFUSED);

  /* without the server address, only the SSH ports are locked */
  g_assert_true(tg_firewall_update_servers(firewall, NULL, 0, &error));
  g_assert_no_error(error);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 4443, 0, 0), ==, 0);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 22, 0, 0), ==, ECONNREFUSED);
  close(ssh);
  close(custom);
  close(other);
  peer_teardown(&peer);
}

static void
test_traffic_listener_guard(void)
{
  Peer peer;
  TgFirewallConfig config = default_config();
  const TgFirewallAddress allowed = address4(PEER_ADDRESS, 32);
  g_autoptr(TgFirewall) firewall = NULL;
  g_autoptr(GError) error = NULL;
  TgFirewallCounters counters;
  int listener;

  peer_setup(&peer);
  listener = listen_on(&peer, -1, "0.0.0.0", 8080);
  firewall = new_firewall(&config);
  g_assert_cmpint(try_connect(peer.netns, LOCAL_ADDRESS, 8080, 0, 0), ==, 0);
  g_assert_true(add_remote(firewall, 8080, NULL, 0, "t", &error));
  g_assert_cmpint(try_connect(-1, "127.0.0.1", 8080, 0, 0), ==, 0);
  g_assert_cmpint(try_connect(-1, LOCAL_ADDRESS, 8080, 0, 0), ==, 0); /* via lo */
  g_assert_cmpint(try_connect(peer.netns, LOCAL_ADDRESS, 8080, 0, 0), ==, ECONNREFUSED);
  g_assert_true(tg_firewall_read_counters(firewall, &counters, &error));
  g_assert_cmpuint(counters.listener_packets, ==, 1);

  g_assert_true(tg_firewall_remove_listener(firewall, AF_INET, NULL, 8080, &error));
  g_assert_true(add_remote(firewall, 8080, &allowed, 1, "t", &error));
  g_assert_no_error(error);
  g_assert_cmpint(try_connect(peer.netns, LOCAL_ADDRESS, 8080, 0, 0), ==, 0);
  close(listener);
  peer_teardown(&peer);
}

/* The guard is keyed by address and port: a listener guarded on one
 * address leaves another service on the same port (another address) alone,
 * and a second listener there is guarded on its own. */
static void
test_traffic_listener_address(void)
{
  Peer peer;
  TgFirewallConfig config = default_config();
  const TgFirewallAddress local = address4(LOCAL_ADDRESS, 32);
  const TgFirewallAddress second = address4(SECOND_ADDRESS, 32);
  const TgFirewallAddress allowed = address4(PEER_ADDRESS, 32);
  g_autoptr(TgFirewall) firewall = NULL;
  g_autoptr(GError) error = NULL;
  TgFirewallListener guarded = { .family = AF_INET,
                                 .address = &local,
                                 .port = 8080,
                                 .guard_remote = TRUE,
                                 .tunnel_id = "a" };
  TgFirewallListener other = { .family = AF_INET,
                               .address = &second,
                               .port = 8080,
                               .guard_remote = TRUE,
                               .sources = &allowed,
                               .n_sources = 1,
                               .tunnel_id = "b" };
  int first, service;
  g_autofree char *text = NULL;

  peer_setup(&peer);
  run_ok("ip addr add " SECOND_ADDRESS "/24 dev tgv0");
  first = listen_on(&peer, -1, LOCAL_ADDRESS, 8080);
  service = listen_on(&peer, -1, SECOND_ADDRESS, 8080);
  firewall = new_firewall(&config);
  g_assert_true(tg_firewall_add_listener(firewall, &guarded, &error));
  g_assert_no_error(error);
  g_assert_cmpint(try_connect(peer.netns, LOCAL_ADDRESS, 8080, 0, 0), ==, ECONNREFUSED);
  g_assert_cmpint(try_connect(peer.netns, SECOND_ADDRESS, 8080, 0, 0), ==, 0);
  g_assert_true(tg_firewall_add_listener(firewall, &other, &error));
  g_assert_no_error(error);
  g_assert_false(tg_firewall_add_listener(firewall, &other, &error));
  g_assert_error(error, TG_ERROR, TG_ERROR_ADDRESS_IN_USE);
  g_clear_error(&error);
  /* the second's allowed source does not open the first */
  g_assert_cmpint(try_connect(peer.netns, SECOND_ADDRESS, 8080, 0, 0), ==, 0);
  g_assert_cmpint(try_connect(peer.netns, LOCAL_ADDRESS, 8080, 0, 0), ==, ECONNREFUSED);
  text = summary();
  assert_line(text, "set listener_addrs_v4 type=ipv4_addr . inet_service flags= "
                    "elems=" LOCAL_ADDRESS " . 8080," SECOND_ADDRESS " . 8080");
  assert_line(text, "set listener_sources_v4 type=ipv4_addr . ipv4_addr . inet_service "
                    "flags= elems=" PEER_ADDRESS " . " SECOND_ADDRESS " . 8080");
  g_assert_true(tg_firewall_remove_listener(firewall, AF_INET, &local, 8080, &error));
  g_assert_cmpint(try_connect(peer.netns, LOCAL_ADDRESS, 8080, 0, 0), ==, 0);
  close(first);
  close(service);
  peer_teardown(&peer);
}

typedef struct {
  guint n;
  TgFirewallRefusal last;
  char last_tunnel[32];
} Refusals;

static void
on_refusal(const TgFirewallRefusal *refusal, gpointer user_data)
{
  Refusals *refusals = user_data;

  refusals->n++;
  refusals->last = *refusal;
  g_strlcpy(refusals->last_tunnel, refusal->tunnel_id != NULL ? refusal->tunnel_id : "",
            sizeof refusals->last_tunnel);
  refusals->last.tunnel_id = refusals->last_tunnel;
}

static void
wait_refusals(Refusals *refusals, guint n)
{
  gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;

  while (refusals->n < n && g_get_monotonic_time() < deadline) {
    if (!g_main_context_iteration(NULL, FALSE))
      g_usleep(10000);
  }
  g_assert_cmpuint(refusals->n, ==, n);
}

/* ListenerUsers: a local connection to a listener reaches it only from the
 * uids it names and root; the others are reset by the kernel, counted, and
 * reported with their uid. Keyed by address: two users' listeners on one
 * port of two loopback addresses are each their own. */
static void
test_traffic_listener_users(void)
{
  TgFirewallConfig config = default_config();
  const TgFirewallAddress first = address4("127.0.0.1", 32);
  const TgFirewallAddress second = address4("127.0.0.2", 32);
  const guint32 alice = 61001, bob = 61002, carol = 61003;
  const guint32 alices[] = { alice }, bobs[] = { bob, carol };
  TgFirewallListener a = { .family = AF_INET,
                           .address = &first,
                           .port = 8090,
                           .guard_local = TRUE,
                           .uids = alices,
                           .n_uids = 1,
                           .tunnel_id = "alice-1" };
  TgFirewallListener b = { .family = AF_INET,
                           .address = &second,
                           .port = 8090,
                           .guard_local = TRUE,
                           .uids = bobs,
                           .n_uids = 2,
                           .tunnel_id = "bob-1" };
  TgFirewallListener wild = { .family = AF_INET,
                              .port = 8091,
                              .guard_local = TRUE,
                              .uids = alices,
                              .n_uids = 1,
                              .tunnel_id = "alice-2" };
  g_autoptr(TgFirewall) firewall = NULL;
  g_autoptr(GError) error = NULL;
  TgFirewallCounters counters;
  Refusals refusals = { 0 };
  g_autofree char *description = NULL;
  int fds[3];

  new_netns();
  fds[0] = listen_on(NULL, -1, "127.0.0.1", 8090);
  fds[1] = listen_on(NULL, -1, "127.0.0.2", 8090);
  fds[2] = listen_on(NULL, -1, "0.0.0.0", 8091);
  firewall = new_firewall(&config);
  tg_firewall_set_refusal_handler(firewall, on_refusal, &refusals);
  g_assert_true(tg_firewall_watch(firewall, NULL, &error));
  g_assert_true(tg_firewall_add_listener(firewall, &a, &error));
  g_assert_true(tg_firewall_add_listener(firewall, &b, &error));
  g_assert_true(tg_firewall_add_listener(firewall, &wild, &error));
  g_assert_no_error(error);

  g_assert_cmpint(try_connect(-1, "127.0.0.1", 8090, 0, alice), ==, 0);
  g_assert_cmpint(try_connect(-1, "127.0.0.1", 8090, 0, 0), ==, 0); /* root */
  g_assert_cmpint(try_connect(-1, "127.0.0.2", 8090, 0, bob), ==, 0);
  g_assert_cmpint(try_connect(-1, "127.0.0.2", 8090, 0, carol), ==, 0);
  g_assert_cmpint(try_connect(-1, "127.0.0.1", 8090, 0, bob), ==, ECONNREFUSED);
  wait_refusals(&refusals, 1);
  g_assert_true(refusals.last.has_uid);
  g_assert_cmpuint(refusals.last.uid, ==, bob);
  g_assert_cmpuint(refusals.last.destination_port, ==, 8090);
  g_assert_cmpstr(refusals.last.tunnel_id, ==, "alice-1");
  g_assert_cmpint(try_connect(-1, "127.0.0.2", 8090, 0, alice), ==, ECONNREFUSED);
  wait_refusals(&refusals, 2);
  g_assert_cmpuint(refusals.last.uid, ==, alice);
  g_assert_cmpstr(refusals.last.tunnel_id, ==, "bob-1");
  /* every address of the family: 127.0.0.1 and 127.0.0.3 alike */
  g_assert_cmpint(try_connect(-1, "127.0.0.1", 8091, 0, alice), ==, 0);
  g_assert_cmpint(try_connect(-1, "127.0.0.3", 8091, 0, carol), ==, ECONNREFUSED);
  wait_refusals(&refusals, 3);
  g_assert_cmpstr(refusals.last.tunnel_id, ==, "alice-2");
  g_assert_true(tg_firewall_read_counters(firewall, &counters, &error));
  g_assert_cmpuint(counters.owner_packets, ==, 3);
  g_assert_cmpuint(counters.listener_packets, ==, 0);
  description = tg_firewall_describe(firewall);
  g_assert_nonnull(strstr(description, "listener 127.0.0.2 port 8090 (tunnel bob-1): "
                                       "other hosts not guarded; local users root, uid "
                                       "61002, uid 61003\n"));

  /* gone with its listener */
  g_assert_true(tg_firewall_remove_listener(firewall, AF_INET, &first, 8090, &error));
  g_assert_cmpint(try_connect(-1, "127.0.0.1", 8090, 0, bob), ==, 0);
  for (gsize i = 0; i < G_N_ELEMENTS(fds); i++)
    close(fds[i]);
}

/* Server mode: an SFTP-only uid's sockets carry nothing; a jump-host uid
 * reaches only its networks and port ranges (an interval concatenation); a
 * uid the daemon has not placed gets nothing through until it is, and the
 * kernel notes it for the daemon. */
static void
test_traffic_server_mode(void)
{
  Peer peer;
  TgFirewallConfig config = default_config();
  g_autoptr(TgFirewall) firewall = NULL;
  g_autoptr(GError) error = NULL;
  TgFirewallCounters counters;
  const guint32 sftp_only = nobody_uid(), jump = 61000, other = 61001, unknown = 61002,
                unknown_sftp = 61003;
  const guint32 known[] = { sftp_only, jump, other };
  g_autoptr(GArray) unknown_uids = NULL;
  TgFirewallServerUsers users = { 0 };
  const TgFirewallJumpRule rules[] = {
    { jump, address4(PEER_ADDRESS, 32), 80, 80 },
    { jump, address4("10.77.0.0", 24), 8000, 8100 },
  };
  const guint16 ports[] = { 80, 443, 8000, 8050, 8101 };
  int listeners[G_N_ELEMENTS(ports)], local;

  peer_setup(&peer);
  for (gsize i = 0; i < G_N_ELEMENTS(ports); i++)
    listeners[i] = listen_on(&peer, peer.netns, PEER_ADDRESS, ports[i]);
  local = listen_on(&peer, -1, "127.0.0.1", 9999); /* loopback is no way around it */
  config.egress_lockdown = FALSE;
  config.server_mode = TRUE;
  config.sftp_only_uids = &sftp_only;
  config.n_sftp_only_uids = 1;
  config.jump_uids = &jump;
  config.n_jump_uids = 1;
  config.jump_rules = rules;
  config.n_jump_rules = G_N_ELEMENTS(rules);
  config.known_uids = known;
  config.n_known_uids = G_N_ELEMENTS(known);
  firewall = new_firewall(&config);

  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 443, 0, 0), ==, 0); /* root: anything */
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 80, 0, sftp_only), ==, ECONNREFUSED);
  g_assert_cmpint(try_connect(-1, "127.0.0.1", 9999, 0, 0), ==, 0);
  g_assert_cmpint(try_connect(-1, "127.0.0.1", 9999, 0, sftp_only), ==, ECONNREFUSED);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 80, 0, jump), ==, 0);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 8000, 0, jump), ==, 0);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 8050, 0, jump), ==, 0);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 8101, 0, jump), ==, ECONNREFUSED);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 443, 0, jump), ==, ECONNREFUSED);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 443, 0, other), ==, 0); /* others */
  g_assert_true(tg_firewall_read_counters(firewall, &counters, &error));
  g_assert_cmpuint(counters.server_packets, >=, 4);
  g_assert_cmpuint(counters.unknown_packets, ==, 0);

  /* a uid not placed: its SYN (and the one sent again) is dropped and noted */
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 443, 0, unknown), ==, ETIMEDOUT);
  g_assert_cmpint(try_connect(-1, "127.0.0.1", 9999, 0, unknown_sftp), ==, ETIMEDOUT);
  g_assert_true(tg_firewall_read_counters(firewall, &counters, &error));
  g_assert_cmpuint(counters.unknown_packets, >=, 2);
  unknown_uids = tg_firewall_read_unknown_uids(firewall, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(unknown_uids->len, ==, 2);
  g_assert_true(g_array_index(unknown_uids, guint32, 0) == unknown ||
                g_array_index(unknown_uids, guint32, 1) == unknown);
  g_assert_true(g_array_index(unknown_uids, guint32, 0) == unknown_sftp ||
                g_array_index(unknown_uids, guint32, 1) == unknown_sftp);
  /* placed: one unrestricted, one SFTP-only */
  users.known_uids = &unknown;
  users.n_known_uids = 1;
  g_assert_true(tg_firewall_add_server_users(firewall, &users, &error));
  users.known_uids = &unknown_sftp;
  users.sftp_only_uids = &unknown_sftp;
  users.n_sftp_only_uids = 1;
  g_assert_true(tg_firewall_add_server_users(firewall, &users, &error));
  g_assert_no_error(error);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 443, 0, unknown), ==, 0);
  g_assert_cmpint(try_connect(-1, "127.0.0.1", 9999, 0, unknown_sftp), ==, ECONNREFUSED);

  /* users changed: one batch replaces them */
  memset(&users, 0, sizeof users);
  users.known_uids = known;
  users.n_known_uids = G_N_ELEMENTS(known);
  users.jump_uids = &jump;
  users.n_jump_uids = 1;
  users.jump_rules = rules;
  users.n_jump_rules = 1;
  g_assert_true(tg_firewall_set_server_users(firewall, &users, &error));
  g_assert_no_error(error);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 80, 0, sftp_only), ==, 0);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 8050, 0, jump), ==, ECONNREFUSED);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 80, 0, jump), ==, 0);
  /* a bad rule changes nothing */
  {
    TgFirewallJumpRule bad = { jump, address4(PEER_ADDRESS, 32), 90, 80 };
    users.jump_rules = &bad;
    g_assert_false(tg_firewall_set_server_users(firewall, &users, &error));
    g_assert_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
  }
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 80, 0, jump), ==, 0);
  /* replaced: the uids placed one by one are unknown again */
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 443, 0, unknown), ==, ETIMEDOUT);
  for (gsize i = 0; i < G_N_ELEMENTS(ports); i++)
    close(listeners[i]);
  close(local);
  peer_teardown(&peer);
}

static void
test_traffic_connect_back(void)
{
  Peer peer;
  TgFirewallConfig config = default_config();
  const TgFirewallAddress destination = address4(PEER_ADDRESS, 32);
  g_autoptr(TgFirewall) firewall = NULL;
  g_autoptr(GError) error = NULL;
  TgFirewallCounters counters;
  int allowed, other;

  peer_setup(&peer);
  allowed = listen_on(&peer, peer.netns, PEER_ADDRESS, 5432);
  other = listen_on(&peer, peer.netns, PEER_ADDRESS, 5433);
  firewall = new_firewall(&config);
  g_assert_true(tg_firewall_add_connect_back(firewall, &destination, 5432, "t", &error));
  g_assert_no_error(error);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 5432, TG_FIREWALL_CONNECT_BACK_MARK, 0),
                  ==, 0);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 5433, TG_FIREWALL_CONNECT_BACK_MARK, 0),
                  ==, ECONNREFUSED);
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 5433, 0, 0), ==, 0); /* not pinned */
  g_assert_true(tg_firewall_read_counters(firewall, &counters, &error));
  g_assert_cmpuint(counters.connect_back_packets, ==, 1);
  g_assert_true(tg_firewall_remove_connect_back(firewall, &destination, 5432, &error));
  g_assert_cmpint(try_connect(-1, PEER_ADDRESS, 5432, TG_FIREWALL_CONNECT_BACK_MARK, 0),
                  ==, ECONNREFUSED);
  close(allowed);
  close(other);
  peer_teardown(&peer);
}

int
main(int argc, char **argv)
{
  g_autofree char *host_before = NULL;
  g_autofree char *host_after = NULL;
  int host_netns;
  int result;

  if (geteuid() != 0) {
    printf("1..0 # SKIP the firewall tests need root (network namespaces, nftables)\n");
    return 77;
  }
  g_test_init(&argc, &argv, NULL);
  host_before = run_shell("nft list ruleset", NULL);
  host_netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  g_assert_cmpint(host_netns, >=, 0);
  new_netns();

  g_test_add_func("/firewall/install", test_install);
  g_test_add_func("/firewall/replace-stale", test_replace_stale);
  g_test_add_func("/firewall/elements", test_elements);
  g_test_add_func("/firewall/invalid-input", test_invalid_input);
  g_test_add_func("/firewall/owner", test_owner);
  g_test_add_func("/firewall/repair", test_repair);
  g_test_add_func("/firewall/traffic/lockdown", test_traffic_lockdown);
  g_test_add_func("/firewall/traffic/listener-guard", test_traffic_listener_guard);
  g_test_add_func("/firewall/traffic/listener-address", test_traffic_listener_address);
  g_test_add_func("/firewall/traffic/listener-users", test_traffic_listener_users);
  g_test_add_func("/firewall/traffic/connect-back", test_traffic_connect_back);
  g_test_add_func("/firewall/traffic/server-mode", test_traffic_server_mode);
  result = g_test_run();

  /* The host's ruleset is exactly as it was. */
  g_assert_cmpint(setns(host_netns, CLONE_NEWNET), ==, 0);
  host_after = run_shell("nft list ruleset", NULL);
  if (g_strcmp0(host_before, host_after) != 0) {
    printf("Bail out! the host's ruleset changed during the tests\n");
    return 1;
  }
  close(host_netns);
  return result;
}
