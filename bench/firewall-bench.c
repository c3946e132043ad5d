/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Firewall benchmark: the cost of one tunnel's firewall elements (a guarded
 * listener with one allowed source, one connect-back destination: add, then
 * remove) with 10 and with 10,000 tunnels present, against `nft -f` loading an
 * equivalent whole ruleset. Root only; runs in its own network namespace.
 *   meson setup build -Dbenchmarks=true
 *   ninja -C build bench/firewall-bench && sudo build/bench/firewall-bench */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "firewall.h"

#define ROUNDS 500
#define NFT_ROUNDS 5

static TgFirewallAddress
tunnel_address(guint i)
{
  TgFirewallAddress address = { AF_INET, 32, { 10, 200, (i >> 8) & 0xff, i & 0xff } };
  return address;
}

static void
add_tunnel(TgFirewall *firewall, guint i)
{
  g_autoptr(GError) error = NULL;
  TgFirewallAddress source = tunnel_address(i);
  guint32 owner = 1000 + i;
  /* as the daemon makes an L forward's: guarded from other hosts and from
   * other local users */
  TgFirewallListener listener = {
    .family = AF_INET,
    .port = (guint16)(20000 + i),
    .guard_remote = TRUE,
    .sources = &source,
    .n_sources = 1,
    .guard_local = TRUE,
    .uids = &owner,
    .n_uids = 1,
    .tunnel_id = "bench",
  };

  if (!tg_firewall_add_listener(firewall, &listener, &error) ||
      !tg_firewall_add_connect_back(firewall, &source, 5432, "bench", &error))
    g_error("add: %s", error->message);
}

static void
remove_tunnel(TgFirewall *firewall, guint i)
{
  g_autoptr(GError) error = NULL;
  TgFirewallAddress source = tunnel_address(i);

  if (!tg_firewall_remove_listener(firewall, AF_INET, NULL, (guint16)(20000 + i),
                                   &error) ||
      !tg_firewall_remove_connect_back(firewall, &source, 5432, &error))
    g_error("remove: %s", error->message);
}

/* Microseconds for one tunnel's add + remove with n tunnels present. */
static double
time_one_tunnel(guint n)
{
  const TgPortRange ports[] = { { 22, 22 } };
  TgFirewallConfig config = { .egress_lockdown = TRUE,
                              .ssh_ports = ports,
                              .n_ssh_ports = 1,
                              .listener_guard = TRUE,
                              .connect_back_pinning = TRUE,
                              .ownership = TG_FIREWALL_OWNERSHIP_NEVER };
  g_autoptr(GError) error = NULL;
  g_autoptr(TgFirewall) firewall = tg_firewall_new(&config, &error);
  gint64 start;

  if (firewall == NULL)
    g_error("%s", error->message);
  for (guint i = 0; i < n; i++)
    add_tunnel(firewall, i);
  start = g_get_monotonic_time();
  for (guint round = 0; round < ROUNDS; round++) {
    add_tunnel(firewall, n);
    remove_tunnel(firewall, n);
  }
  return (double)(g_get_monotonic_time() - start) / ROUNDS;
}

/* Microseconds for `nft -f` loading the whole table with n tunnels. */
static double
time_nft_reload(guint n)
{
  g_autoptr(GString) text = g_string_new(
      "table inet tunnelgate\ndelete table inet tunnelgate\n"
      "table inet tunnelgate {\n"
      " set ssh_ports { type inet_service; flags interval; elements = { 22 }; }\n"
      " set listener_ports_v4 { type inet_service; }\n"
      " set listener_sources_v4 { type ipv4_addr . inet_service; }\n"
      " set connect_back_v4 { type ipv4_addr . inet_service; }\n"
      " chain output { type filter hook output priority -10; policy accept;\n"
      "  tcp flags & (fin|syn|rst|ack) == syn jump egress\n }\n"
      " chain egress {\n  meta mark 0x54470002 jump pin\n"
      "  meta mark 0x54470001 accept\n"
      "  tcp dport @ssh_ports reject with tcp reset\n }\n"
      " chain pin {\n  ip daddr . tcp dport @connect_back_v4 accept\n"
      "  reject with tcp reset\n }\n"
      " chain input { type filter hook input priority -10; policy accept;\n"
      "  meta iiftype loopback accept\n"
      "  ip saddr . tcp dport @listener_sources_v4 accept\n"
      "  tcp dport @listener_ports_v4 reject with tcp reset\n }\n}\n");
  g_autofree char *path = g_strdup("/tmp/tg-firewall-bench-XXXXXX");
  g_autofree char *command = NULL;
  int fd = g_mkstemp(path);
  gint64 start;

  /* the same elements as time_one_tunnel's n tunnels; one file, one transaction */
  for (guint i = 0; i < n; i++) {
    TgFirewallAddress a = tunnel_address(i);
    g_string_append_printf(text,
                           "add element inet tunnelgate listener_ports_v4 { %u }\n"
                           "add element inet tunnelgate listener_sources_v4 "
                           "{ %u.%u.%u.%u . %u }\n"
                           "add element inet tunnelgate connect_back_v4 "
                           "{ %u.%u.%u.%u . 5432 }\n",
                           20000 + i, a.bytes[0], a.bytes[1], a.bytes[2], a.bytes[3],
                           20000 + i, a.bytes[0], a.bytes[1], a.bytes[2], a.bytes[3]);
  }
  if (fd < 0 || write(fd, text->str, text->len) != (ssize_t)text->len)
    g_error("cannot write %s", path);
  close(fd);
  command = g_strdup_printf("nft -f %s", path);
  start = g_get_monotonic_time();
  for (guint round = 0; round < NFT_ROUNDS; round++) {
    int status = 0;
    if (!g_spawn_command_line_sync(command, NULL, NULL, &status, NULL) || status != 0)
      g_error("'%s' failed", command);
  }
  unlink(path);
  return (double)(g_get_monotonic_time() - start) / NFT_ROUNDS;
}

int
main(void)
{
  double small, large, nft_small, nft_large;

  if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0) {
    fprintf(stderr, "firewall-bench: needs root (runs in its own network namespace)\n");
    return 77;
  }
  small = time_one_tunnel(10);
  large = time_one_tunnel(10000);
  nft_small = time_nft_reload(10);
  nft_large = time_nft_reload(10000);
  printf("one tunnel add+remove (2+2 element batches), mean of %d:\n", ROUNDS);
  printf("  with    10 tunnels: %8.1f us\n", small);
  printf("  with 10000 tunnels: %8.1f us   ratio 10000/10: %.2f\n", large, large / small);
  printf("nft -f whole table (mean of %d):\n", NFT_ROUNDS);
  printf("  with    10 tunnels: %8.1f us\n", nft_small);
  printf("  with 10000 tunnels: %8.1f us   ratio 10000/10: %.2f\n", nft_large,
         nft_large / nft_small);
  printf("nft -f reload / element update: %.0fx (10 tunnels), %.0fx (10000 tunnels)\n",
         nft_small / small, nft_large / large);
  return 0;
}
