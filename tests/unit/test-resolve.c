/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The resolver (src/common/resolve.c): numeric addresses and /etc/hosts
 * only, so it never needs a network. */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>

#include "resolve.h"

static void
test_sync_ipv4_with_port(void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GArray) addresses = tg_resolve_sync("127.0.0.1", 8080, 0, &error);
  const struct sockaddr_in *in;

  g_assert_no_error(error);
  g_assert_nonnull(addresses);
  g_assert_cmpuint(addresses->len, >=, 1);
  in = (const struct sockaddr_in *)&g_array_index(addresses, struct sockaddr_storage, 0);
  g_assert_cmpint(in->sin_family, ==, AF_INET);
  g_assert_cmpuint(ntohs(in->sin_port), ==, 8080);
  g_assert_cmphex(ntohl(in->sin_addr.s_addr), ==, 0x7f000001);
}

static void
test_sync_ipv6(void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GArray) addresses = tg_resolve_sync("::1", 22, 0, &error);
  const struct sockaddr_in6 *in6;

  g_assert_no_error(error);
  g_assert_cmpuint(addresses->len, ==, 1);
  in6 = (const struct sockaddr_in6 *)&g_array_index(addresses, struct sockaddr_storage, 0);
  g_assert_cmpint(in6->sin6_family, ==, AF_INET6);
  g_assert_cmpuint(ntohs(in6->sin6_port), ==, 22);
  g_assert_true(IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr));
}

static void
test_sync_failure_says_why(void)
{
  g_autoptr(GError) error = NULL;
  /* AI_NUMERICHOST: a name is refused without asking DNS */
  g_autoptr(GArray) addresses = tg_resolve_sync("intra.example", 80, AI_NUMERICHOST, &error);

  g_assert_null(addresses);
  g_assert_error(error, G_RESOLVER_ERROR, G_RESOLVER_ERROR_NOT_FOUND);
  g_assert_cmpstr(error->message, ==, gai_strerror(EAI_NONAME));
}

static void
test_networks(void)
{
  g_autoptr(GArray) networks = g_array_new(FALSE, FALSE, sizeof(TgNetwork));
  const TgNetwork *network;

  g_assert_true(tg_resolve_networks("10.1.2.3", networks));
  g_assert_true(tg_resolve_networks("fd00::7", networks));
  g_assert_cmpuint(networks->len, ==, 2);
  network = &g_array_index(networks, TgNetwork, 0);
  g_assert_cmpint(network->family, ==, AF_INET);
  g_assert_cmpuint(network->prefix, ==, 32);
  g_assert_cmpmem(network->bytes, 4, ((const guint8[]){ 10, 1, 2, 3 }), 4);
  network = &g_array_index(networks, TgNetwork, 1);
  g_assert_cmpint(network->family, ==, AF_INET6);
  g_assert_cmpuint(network->prefix, ==, 128);
  g_assert_cmpuint(network->bytes[0], ==, 0xfd);
  g_assert_cmpuint(network->bytes[15], ==, 7);
}

typedef struct {
  GPtrArray *answers;
  GError *error;
  gboolean done;
} Waiter;

static void
on_resolved(GObject *source, GAsyncResult *result, gpointer user_data)
{
  Waiter *waiter = user_data;

  waiter->answers = tg_resolve_finish(result, &waiter->error);
  waiter->done = TRUE;
}

static void
test_async_batch_in_order(void)
{
  const char *hosts[] = { "::1", "localhost", "192.0.2.9" };
  const guint16 ports[] = { 1, 2, 3 };
  Waiter waiter = { 0 };
  const TgResolved *answer;

  tg_resolve_async(hosts, ports, G_N_ELEMENTS(hosts), NULL, on_resolved, &waiter);
  g_assert_false(waiter.done); /* answered in this thread's main context */
  while (!waiter.done)
    g_main_context_iteration(NULL, TRUE);
  g_assert_no_error(waiter.error);
  g_assert_cmpuint(waiter.answers->len, ==, 3);
  for (guint i = 0; i < 3; i++) {
    answer = g_ptr_array_index(waiter.answers, i);
    g_assert_cmpstr(answer->host, ==, hosts[i]);
    g_assert_cmpuint(answer->port, ==, ports[i]);
    g_assert_no_error(answer->error);
    g_assert_cmpuint(answer->addresses->len, >=, 1);
  }
  answer = g_ptr_array_index(waiter.answers, 2);
  g_assert_cmpuint(ntohs(((const struct sockaddr_in *)answer->addresses->data)->sin_port),
                   ==, 3);
  g_ptr_array_unref(waiter.answers);
}

static void
test_async_cancelled(void)
{
  const char *hosts[] = { "127.0.0.1" };
  g_autoptr(GCancellable) cancellable = g_cancellable_new();
  Waiter waiter = { 0 };

  tg_resolve_async(hosts, NULL, 1, cancellable, on_resolved, &waiter);
  g_cancellable_cancel(cancellable);
  while (!waiter.done)
    g_main_context_iteration(NULL, TRUE);
  g_assert_null(waiter.answers);
  g_assert_error(waiter.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_error_free(waiter.error);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/resolve/sync/ipv4-with-port", test_sync_ipv4_with_port);
  g_test_add_func("/resolve/sync/ipv6", test_sync_ipv6);
  g_test_add_func("/resolve/sync/failure-says-why", test_sync_failure_says_why);
  g_test_add_func("/resolve/networks", test_networks);
  g_test_add_func("/resolve/async/batch-in-order", test_async_batch_in_order);
  g_test_add_func("/resolve/async/cancelled", test_async_cancelled);
  return g_test_run();
}
