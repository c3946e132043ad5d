/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The netwatch's judgement of rtnetlink messages (src/daemon/netwatch.c,
 * tg_netwatch_classify): hand-made buffers as the kernel would send them,
 * and ones it would not (truncated, garbage, wrong lengths), which must be
 * skipped without reading past their end. */
#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <string.h>

#include "netwatch.h"

#define ETH0 2
#define VETH0 7

/* ---- building messages ---- */

static void
pad(GByteArray *buffer)
{
  static const guint8 zeroes[4] = { 0 };

  g_byte_array_append(buffer, zeroes, NLMSG_ALIGN(buffer->len) - buffer->len);
}

/* Starts a message at the end of @buffer; returns its offset. */
static gsize
begin(GByteArray *buffer, guint16 type, const void *body, gsize size)
{
  struct nlmsghdr header = { 0 };
  gsize offset;

  pad(buffer);
  offset = buffer->len;
  header.nlmsg_type = type;
  g_byte_array_append(buffer, (const guint8 *)&header, sizeof header);
  g_byte_array_append(buffer, body, size);
  pad(buffer);
  return offset;
}

static void
attribute(GByteArray *buffer, guint16 type, const void *data, gsize size)
{
  struct rtattr header = { .rta_len = RTA_LENGTH(size), .rta_type = type };

  g_byte_array_append(buffer, (const guint8 *)&header, sizeof header);
  g_byte_array_append(buffer, data, size);
  pad(buffer);
}

static void
attribute_u32(GByteArray *buffer, guint16 type, guint32 value)
{
  attribute(buffer, type, &value, sizeof value);
}

/* An address attribute of the family of @text. */
static void
attribute_address(GByteArray *buffer, guint16 type, const char *text)
{
  guint8 address[16];
  int family = strchr(text, ':') != NULL ? AF_INET6 : AF_INET;

  g_assert_cmpint(inet_pton(family, text, address), ==, 1);
  attribute(buffer, type, address, family == AF_INET6 ? 16 : 4);
}

static void
end(GByteArray *buffer, gsize offset)
{
  ((struct nlmsghdr *)(buffer->data + offset))->nlmsg_len = buffer->len - offset;
}

static void
add_route(GByteArray *buffer, guint16 type, const char *destination, guint8 dst_len,
          const char *gateway, guint32 oif, guint8 table, guint8 route_type,
          guint32 flags)
{
  struct rtmsg body = { 0 };
  gsize offset;

  body.rtm_family = (destination != NULL && strchr(destination, ':') != NULL) ||
                            (gateway != NULL && strchr(gateway, ':') != NULL)
                        ? AF_INET6
                        : AF_INET;
  body.rtm_dst_len = dst_len;
  body.rtm_table = table;
  body.rtm_protocol = RTPROT_BOOT;
  body.rtm_scope = RT_SCOPE_UNIVERSE;
  body.rtm_type = route_type;
  body.rtm_flags = flags;
  offset = begin(buffer, type, &body, sizeof body);
  attribute_u32(buffer, RTA_TABLE, table);
  if (destination != NULL)
    attribute_address(buffer, RTA_DST, destination);
  if (gateway != NULL)
    attribute_address(buffer, RTA_GATEWAY, gateway);
  if (oif != 0)
    attribute_u32(buffer, RTA_OIF, oif);
  end(buffer, offset);
}

static void
add_default_route(GByteArray *buffer, guint16 type, const char *gateway, guint32 oif)
{
  add_route(buffer, type, NULL, 0, gateway, oif, RT_TABLE_MAIN, RTN_UNICAST, 0);
}

static void
add_address(GByteArray *buffer, guint16 type, const char *address, guint8 prefix,
            guint32 index, guint32 flags)
{
  struct ifaddrmsg body = { 0 };
  gsize offset;

  body.ifa_family = strchr(address, ':') != NULL ? AF_INET6 : AF_INET;
  body.ifa_prefixlen = prefix;
  body.ifa_index = index;
  body.ifa_flags = (guint8)flags;
  offset = begin(buffer, type, &body, sizeof body);
  attribute_address(buffer, IFA_ADDRESS, address);
  if (body.ifa_family == AF_INET)
    attribute_address(buffer, IFA_LOCAL, address);
  attribute_u32(buffer, IFA_FLAGS, flags);
  end(buffer, offset);
}

static void
add_link(GByteArray *buffer, guint16 type, guint8 family, int index, const char *name,
         guint flags, guint change, int operstate)
{
  struct ifinfomsg body = { 0 };
  gsize offset;

  body.ifi_family = family;
  body.ifi_index = index;
  body.ifi_flags = flags;
  body.ifi_change = change;
  offset = begin(buffer, type, &body, sizeof body);
  if (name != NULL)
    attribute(buffer, IFLA_IFNAME, name, strlen(name) + 1);
  attribute_u32(buffer, IFLA_MTU, 1500);
  if (operstate >= 0) {
    guint8 state = (guint8)operstate;
    attribute(buffer, IFLA_OPERSTATE, &state, 1);
  }
  end(buffer, offset);
}

#define UP_RUNNING (IFF_UP | IFF_RUNNING | IFF_LOWER_UP)

/* ---- fixture: a state that knows eth0 and veth0, both up ---- */

typedef struct {
  TgNetwatchState *state;
  GByteArray *buffer;
  char *cause;
} Fixture;

static void
fixture_set_up(Fixture *fixture, gconstpointer data)
{
  g_autoptr(GByteArray) links = g_byte_array_new();

  fixture->state = tg_netwatch_state_new();
  fixture->buffer = g_byte_array_new();
  add_link(links, RTM_NEWLINK, AF_UNSPEC, ETH0, "eth0", UP_RUNNING, 0, IF_OPER_UP);
  add_link(links, RTM_NEWLINK, AF_UNSPEC, VETH0, "veth0", UP_RUNNING, 0, IF_OPER_UP);
  /* as the dump at start does: learnt, whatever they count */
  tg_netwatch_classify(fixture->state, links->data, links->len, NULL);
}

static void
fixture_tear_down(Fixture *fixture, gconstpointer data)
{
  tg_netwatch_state_free(fixture->state);
  g_byte_array_unref(fixture->buffer);
  g_free(fixture->cause);
}

/* Classifies what the fixture's buffer holds (then empties it). */
static guint
classify(Fixture *fixture)
{
  guint count;

  g_clear_pointer(&fixture->cause, g_free);
  count = tg_netwatch_classify(fixture->state, fixture->buffer->data,
                               fixture->buffer->len, &fixture->cause);
  g_byte_array_set_size(fixture->buffer, 0);
  if (count == 0)
    g_assert_null(fixture->cause);
  else
    g_assert_nonnull(fixture->cause);
  return count;
}

/* ---- routes ---- */

static void
test_default_route(Fixture *fixture, gconstpointer data)
{
  add_default_route(fixture->buffer, RTM_NEWROUTE, "10.0.0.1", ETH0);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "default route added via 10.0.0.1 dev eth0");

  add_default_route(fixture->buffer, RTM_DELROUTE, "10.0.0.1", ETH0);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "default route removed via 10.0.0.1 dev eth0");

  add_default_route(fixture->buffer, RTM_NEWROUTE, "fe80::1", VETH0);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "IPv6 default route added via fe80::1 dev veth0");

  /* no gateway (a tunnel device), an unknown link */
  add_default_route(fixture->buffer, RTM_NEWROUTE, NULL, 42);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "default route added dev ifindex 42");

  add_route(fixture->buffer, RTM_NEWROUTE, NULL, 0, NULL, 0, RT_TABLE_MAIN,
            RTN_UNREACHABLE, 0);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "unreachable default route added");
}

static void
test_other_routes(Fixture *fixture, gconstpointer data)
{
  add_route(fixture->buffer, RTM_NEWROUTE, "10.1.0.0", 24, NULL, VETH0, RT_TABLE_MAIN,
            RTN_UNICAST, 0);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "route 10.1.0.0/24 added dev veth0");

  add_route(fixture->buffer, RTM_DELROUTE, "fd00:1::", 64, "fd00::1", ETH0, RT_TABLE_MAIN,
            RTN_UNICAST, 0);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "route fd00:1::/64 removed via fd00::1 dev eth0");
}

static void
test_route_not_main_table(Fixture *fixture, gconstpointer data)
{
  struct rtmsg body = { .rtm_family = AF_INET,
                        .rtm_table = RT_TABLE_UNSPEC,
                        .rtm_type = RTN_UNICAST };
  gsize offset;

  /* a policy-routing table, the local table (local and broadcast routes) */
  add_route(fixture->buffer, RTM_NEWROUTE, NULL, 0, "10.0.0.1", ETH0, 100, RTN_UNICAST,
            0);
  add_route(fixture->buffer, RTM_NEWROUTE, "10.0.0.2", 32, NULL, ETH0, RT_TABLE_LOCAL,
            RTN_LOCAL, 0);
  add_route(fixture->buffer, RTM_NEWROUTE, "10.0.0.255", 32, NULL, ETH0, RT_TABLE_LOCAL,
            RTN_BROADCAST, 0);
  g_assert_cmpuint(classify(fixture), ==, 0);

  /* a table above 255 is only in RTA_TABLE, which wins over rtm_table */
  offset = begin(fixture->buffer, RTM_NEWROUTE, &body, sizeof body);
  attribute_u32(fixture->buffer, RTA_TABLE, 1000);
  attribute_address(fixture->buffer, RTA_GATEWAY, "10.0.0.1");
  end(fixture->buffer, offset);
  g_assert_cmpuint(classify(fixture), ==, 0);

  body.rtm_table = 100;
  offset = begin(fixture->buffer, RTM_NEWROUTE, &body, sizeof body);
  attribute_u32(fixture->buffer, RTA_TABLE, RT_TABLE_MAIN);
  end(fixture->buffer, offset);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "default route added");

  /* a multicast route in the main table leads nowhere new either */
  add_route(fixture->buffer, RTM_NEWROUTE, "ff00::", 8, NULL, ETH0, RT_TABLE_MAIN,
            RTN_MULTICAST, 0);
  g_assert_cmpuint(classify(fixture), ==, 0);
}

static void
test_route_cloned(Fixture *fixture, gconstpointer data)
{
  add_route(fixture->buffer, RTM_NEWROUTE, "10.9.9.9", 32, "10.0.0.1", ETH0,
            RT_TABLE_MAIN, RTN_UNICAST, RTM_F_CLONED);
  add_route(fixture->buffer, RTM_DELROUTE, "fd00:9::9", 128, "fd00::1", ETH0,
            RT_TABLE_MAIN, RTN_UNICAST, RTM_F_CLONED);
  g_assert_cmpuint(classify(fixture), ==, 0);
}

static void
test_route_multipath(Fixture *fixture, gconstpointer data)
{
  struct rtmsg body = { .rtm_family = AF_INET,
                        .rtm_table = RT_TABLE_MAIN,
                        .rtm_type = RTN_UNICAST };
  guint8 hops[2 * (sizeof(struct rtnexthop) + RTA_LENGTH(4))] = { 0 };
  struct rtnexthop *hop = (struct rtnexthop *)hops;
  struct rtattr *gateway = RTNH_DATA(hop);
  gsize offset;

  for (int i = 0; i < 2; i++) {
    hop = (struct rtnexthop *)(hops + i * (sizeof hops / 2));
    hop->rtnh_len = sizeof hops / 2;
    hop->rtnh_ifindex = i == 0 ? ETH0 : VETH0;
    gateway = RTNH_DATA(hop);
    gateway->rta_type = RTA_GATEWAY;
    gateway->rta_len = RTA_LENGTH(4);
    g_assert_cmpint(
        inet_pton(AF_INET, i == 0 ? "10.0.0.1" : "10.0.0.2", RTA_DATA(gateway)), ==, 1);
  }
  offset = begin(fixture->buffer, RTM_NEWROUTE, &body, sizeof body);
  attribute(fixture->buffer, RTA_MULTIPATH, hops, sizeof hops);
  end(fixture->buffer, offset);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==,
                  "default route added via 10.0.0.1 dev eth0 (multipath)");

  /* a next hop longer than the attribute: skipped */
  ((struct rtnexthop *)hops)->rtnh_len = sizeof hops + 8;
  offset = begin(fixture->buffer, RTM_NEWROUTE, &body, sizeof body);
  attribute(fixture->buffer, RTA_MULTIPATH, hops, sizeof hops);
  end(fixture->buffer, offset);
  g_assert_cmpuint(classify(fixture), ==, 0);
}

/* ---- addresses ---- */

static void
test_address(Fixture *fixture, gconstpointer data)
{
  add_address(fixture->buffer, RTM_NEWADDR, "10.1.0.2", 24, VETH0, IFA_F_PERMANENT);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "address 10.1.0.2/24 added to veth0");

  /* the same again (a DHCP renewal, a lifetime refreshed): nothing */
  add_address(fixture->buffer, RTM_NEWADDR, "10.1.0.2", 24, VETH0, IFA_F_PERMANENT);
  g_assert_cmpuint(classify(fixture), ==, 0);

  add_address(fixture->buffer, RTM_DELADDR, "10.1.0.2", 24, VETH0, IFA_F_PERMANENT);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "address 10.1.0.2/24 removed from veth0");

  /* IPv6: tentative, then usable after DAD; router advertisements refresh it */
  add_address(fixture->buffer, RTM_NEWADDR, "2001:db8::5", 64, ETH0, IFA_F_TENTATIVE);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "address 2001:db8::5/64 added to eth0");
  add_address(fixture->buffer, RTM_NEWADDR, "2001:db8::5", 64, ETH0, 0);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "address 2001:db8::5/64 on eth0 is usable now");
  for (int i = 0; i < 3; i++)
    add_address(fixture->buffer, RTM_NEWADDR, "2001:db8::5", 64, ETH0, 0);
  g_assert_cmpuint(classify(fixture), ==, 0);
  add_address(fixture->buffer, RTM_NEWADDR, "2001:db8::5", 64, ETH0, IFA_F_DEPRECATED);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "address 2001:db8::5/64 on eth0 is deprecated now");

  /* the same address on another link, or with another prefix, is another one */
  add_address(fixture->buffer, RTM_NEWADDR, "2001:db8::5", 64, VETH0, 0);
  add_address(fixture->buffer, RTM_NEWADDR, "2001:db8::5", 56, ETH0, 0);
  g_assert_cmpuint(classify(fixture), ==, 2);
  g_assert_cmpstr(fixture->cause, ==, "address 2001:db8::5/64 added to veth0");
}

/* ---- links ---- */

static void
test_link_flap(Fixture *fixture, gconstpointer data)
{
  /* up and unchanged (an MTU change, a wireless event): nothing */
  add_link(fixture->buffer, RTM_NEWLINK, AF_UNSPEC, VETH0, "veth0", UP_RUNNING, 0,
           IF_OPER_UP);
  g_assert_cmpuint(classify(fixture), ==, 0);

  add_link(fixture->buffer, RTM_NEWLINK, AF_UNSPEC, VETH0, "veth0", 0, IFF_UP,
           IF_OPER_DOWN);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "link veth0 down");

  /* admin up first, the carrier later */
  add_link(fixture->buffer, RTM_NEWLINK, AF_UNSPEC, VETH0, "veth0", IFF_UP, IFF_UP,
           IF_OPER_LOWERLAYERDOWN);
  g_assert_cmpuint(classify(fixture), ==, 0);
  add_link(fixture->buffer, RTM_NEWLINK, AF_UNSPEC, VETH0, "veth0", UP_RUNNING, 0,
           IF_OPER_UP);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "link veth0 up");

  /* the carrier lost (a cable, the peer of a veth) */
  add_link(fixture->buffer, RTM_NEWLINK, AF_UNSPEC, VETH0, "veth0", IFF_UP, 0,
           IF_OPER_LOWERLAYERDOWN);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "link veth0 down (operstate lowerlayerdown)");

  /* a bridge's view of a port is not the link's state */
  add_link(fixture->buffer, RTM_NEWLINK, AF_BRIDGE, VETH0, "veth0", UP_RUNNING, 0,
           IF_OPER_UP);
  add_link(fixture->buffer, RTM_DELLINK, AF_BRIDGE, VETH0, "veth0", UP_RUNNING, 0,
           IF_OPER_UP);
  g_assert_cmpuint(classify(fixture), ==, 0);

  /* a renamed link keeps its state and is named by its new name */
  add_link(fixture->buffer, RTM_NEWLINK, AF_UNSPEC, ETH0, "uplink", UP_RUNNING, 0,
           IF_OPER_UP);
  g_assert_cmpuint(classify(fixture), ==, 0);
  add_default_route(fixture->buffer, RTM_NEWROUTE, "10.0.0.1", ETH0);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "default route added via 10.0.0.1 dev uplink");

  add_link(fixture->buffer, RTM_DELLINK, AF_UNSPEC, ETH0, "uplink", UP_RUNNING, 0,
           IF_OPER_UP);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "link uplink removed");
  /* a link that was down carried nothing */
  add_link(fixture->buffer, RTM_DELLINK, AF_UNSPEC, VETH0, "veth0", IFF_UP, 0,
           IF_OPER_LOWERLAYERDOWN);
  g_assert_cmpuint(classify(fixture), ==, 0);

  /* a new link counts once it is up */
  add_link(fixture->buffer, RTM_NEWLINK, AF_UNSPEC, 9, "wg0", 0, ~0U, IF_OPER_DOWN);
  g_assert_cmpuint(classify(fixture), ==, 0);
  add_link(fixture->buffer, RTM_NEWLINK, AF_UNSPEC, 9, "wg0", IFF_UP | IFF_RUNNING,
           IFF_UP, IF_OPER_UNKNOWN);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "link wg0 up");
}

static void
test_link_name_printable(Fixture *fixture, gconstpointer data)
{
  add_link(fixture->buffer, RTM_NEWLINK, AF_UNSPEC, 11, "ev\x1b[1mil\n", UP_RUNNING, ~0U,
           IF_OPER_UP);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "link ev\\u001b[1mil\\u000a up");

  /* a name without its NUL, or longer than IFNAMSIZ: skipped */
  {
    struct ifinfomsg body = { .ifi_family = AF_UNSPEC,
                              .ifi_index = 12,
                              .ifi_flags = UP_RUNNING };
    gsize offset = begin(fixture->buffer, RTM_NEWLINK, &body, sizeof body);

    attribute(fixture->buffer, IFLA_IFNAME, "abcdefghijklmnopqrstuvwxyz", 26);
    end(fixture->buffer, offset);
  }
  g_assert_cmpuint(classify(fixture), ==, 0);
}

/* ---- several messages, and what the kernel would not send ---- */

static void
test_burst(Fixture *fixture, gconstpointer data)
{
  g_autofree char *cause = NULL;
  guint count;

  add_link(fixture->buffer, RTM_NEWLINK, AF_UNSPEC, ETH0, "eth0", 0, IFF_UP,
           IF_OPER_DOWN);
  add_address(fixture->buffer, RTM_DELADDR, "10.0.0.2", 24, ETH0, IFA_F_PERMANENT);
  add_route(fixture->buffer, RTM_DELROUTE, "10.0.0.0", 24, NULL, ETH0, RT_TABLE_MAIN,
            RTN_UNICAST, 0);
  add_route(fixture->buffer, RTM_DELROUTE, "10.0.0.2", 32, NULL, ETH0, RT_TABLE_LOCAL,
            RTN_LOCAL, 0);
  {
    struct nlmsghdr done = { .nlmsg_len = NLMSG_LENGTH(4), .nlmsg_type = NLMSG_DONE };
    guint8 zero[4] = { 0 };
    g_byte_array_append(fixture->buffer, (const guint8 *)&done, sizeof done);
    g_byte_array_append(fixture->buffer, zero, sizeof zero);
  }
  g_assert_cmpuint(classify(fixture), ==, 3);
  g_assert_cmpstr(fixture->cause, ==, "link eth0 down");

  /* a cause already there is kept: the first of a burst across buffers */
  cause = g_strdup("earlier");
  add_default_route(fixture->buffer, RTM_NEWROUTE, "10.0.0.1", ETH0);
  count = tg_netwatch_classify(fixture->state, fixture->buffer->data,
                               fixture->buffer->len, &cause);
  g_assert_cmpuint(count, ==, 1);
  g_assert_cmpstr(cause, ==, "earlier");
  /* and NULL asks for none */
  count = tg_netwatch_classify(fixture->state, fixture->buffer->data,
                               fixture->buffer->len, NULL);
  g_assert_cmpuint(count, ==, 1);
  g_byte_array_set_size(fixture->buffer, 0);
}

static void
test_truncated(Fixture *fixture, gconstpointer data)
{
  guint full;

  /* a whole datagram cut short: its last message does not fit and ends it */
  add_default_route(fixture->buffer, RTM_NEWROUTE, "10.0.0.1", ETH0);
  full = fixture->buffer->len;
  add_default_route(fixture->buffer, RTM_DELROUTE, "10.0.0.1", ETH0);
  for (guint cut = fixture->buffer->len - 1; cut > full; cut--)
    g_assert_cmpuint(
        tg_netwatch_classify(fixture->state, fixture->buffer->data, cut, NULL), ==, 1);
  for (guint cut = 0; cut < full; cut++)
    g_assert_cmpuint(
        tg_netwatch_classify(fixture->state, fixture->buffer->data, cut, NULL), ==, 0);
  g_assert_cmpuint(classify(fixture), ==, 2);

  /* a message whose own length cuts its last attribute: skipped, and the next
   * message, where that length says, is still read */
  add_default_route(fixture->buffer, RTM_NEWROUTE, "10.0.0.1", ETH0);
  full = fixture->buffer->len;
  ((struct nlmsghdr *)fixture->buffer->data)->nlmsg_len = full - 4;
  g_byte_array_set_size(fixture->buffer, full - 4);
  add_address(fixture->buffer, RTM_NEWADDR, "10.0.0.9", 24, ETH0, 0);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "address 10.0.0.9/24 added to eth0");

  /* a header with no body */
  {
    struct nlmsghdr bare = { .nlmsg_len = NLMSG_HDRLEN, .nlmsg_type = RTM_NEWROUTE };
    g_byte_array_append(fixture->buffer, (const guint8 *)&bare, sizeof bare);
  }
  add_link(fixture->buffer, RTM_NEWLINK, AF_UNSPEC, VETH0, "veth0", 0, IFF_UP,
           IF_OPER_DOWN);
  g_assert_cmpuint(classify(fixture), ==, 1);
  g_assert_cmpstr(fixture->cause, ==, "link veth0 down");
}

static void
test_wrong_lengths(Fixture *fixture, gconstpointer data)
{
  struct nlmsghdr *header;
  struct rtattr *first;

  /* a length shorter than the header, or longer than the buffer: the end */
  add_default_route(fixture->buffer, RTM_NEWROUTE, "10.0.0.1", ETH0);
  header = (struct nlmsghdr *)fixture->buffer->data;
  for (guint32 length = 0; length < NLMSG_HDRLEN; length++) {
    header->nlmsg_len = length;
    g_assert_cmpuint(tg_netwatch_classify(fixture->state, fixture->buffer->data,
                                          fixture->buffer->len, NULL),
                     ==, 0);
  }
  for (guint32 length = fixture->buffer->len + 1; length < fixture->buffer->len + 64;
       length++) {
    header->nlmsg_len = length;
    g_assert_cmpuint(tg_netwatch_classify(fixture->state, fixture->buffer->data,
                                          fixture->buffer->len, NULL),
                     ==, 0);
  }
  header->nlmsg_len = G_MAXUINT32;
  g_assert_cmpuint(tg_netwatch_classify(fixture->state, fixture->buffer->data,
                                        fixture->buffer->len, NULL),
                   ==, 0);
  g_byte_array_set_size(fixture->buffer, 0);

  /* an attribute longer than what is left, or shorter than its header */
  add_default_route(fixture->buffer, RTM_NEWROUTE, "10.0.0.1", ETH0);
  first = RTM_RTA(NLMSG_DATA(fixture->buffer->data));
  first->rta_len = 200;
  g_assert_cmpuint(classify(fixture), ==, 0);
  add_default_route(fixture->buffer, RTM_NEWROUTE, "10.0.0.1", ETH0);
  first = RTM_RTA(NLMSG_DATA(fixture->buffer->data));
  first->rta_len = 2;
  g_assert_cmpuint(classify(fixture), ==, 0);

  /* attributes of the wrong size: a 3-byte gateway, a 2-byte table, an IPv6
   * destination on an IPv4 route, a prefix longer than the address */
  {
    struct rtmsg body = { .rtm_family = AF_INET,
                          .rtm_table = RT_TABLE_MAIN,
                          .rtm_type = RTN_UNICAST };
    gsize offset = begin(fixture->buffer, RTM_NEWROUTE, &body, sizeof body);
    guint16 table = RT_TABLE_MAIN;

    attribute(fixture->buffer, RTA_GATEWAY, "\x0a\x00\x00", 3);
    end(fixture->buffer, offset);
    offset = begin(fixture->buffer, RTM_NEWROUTE, &body, sizeof body);
    attribute(fixture->buffer, RTA_TABLE, &table, sizeof table);
    end(fixture->buffer, offset);
    offset = begin(fixture->buffer, RTM_NEWROUTE, &body, sizeof body);
    attribute_address(fixture->buffer, RTA_DST, "fd00::");
    end(fixture->buffer, offset);
    body.rtm_dst_len = 33;
    offset = begin(fixture->buffer, RTM_NEWROUTE, &body, sizeof body);
    attribute_address(fixture->buffer, RTA_DST, "10.0.0.0");
    end(fixture->buffer, offset);
  }
  {
    struct ifaddrmsg body = { .ifa_family = AF_INET,
                              .ifa_prefixlen = 24,
                              .ifa_index = 2 };
    gsize offset = begin(fixture->buffer, RTM_NEWADDR, &body, sizeof body);

    attribute(fixture->buffer, IFA_LOCAL, "\x0a\x00\x00\x02\x00", 5);
    end(fixture->buffer, offset);
    offset = begin(fixture->buffer, RTM_NEWADDR, &body, sizeof body);
    end(fixture->buffer, offset); /* no address at all */
  }
  {
    struct ifinfomsg body = { .ifi_family = AF_UNSPEC, .ifi_index = VETH0 };
    gsize offset = begin(fixture->buffer, RTM_NEWLINK, &body, sizeof body);
    guint32 operstate = IF_OPER_DOWN;

    attribute(fixture->buffer, IFLA_OPERSTATE, &operstate, sizeof operstate);
    end(fixture->buffer, offset);
  }
  g_assert_cmpuint(classify(fixture), ==, 0);
  /* none of them changed what is known: veth0 is still up */
  add_link(fixture->buffer, RTM_NEWLINK, AF_UNSPEC, VETH0, "veth0", UP_RUNNING, 0,
           IF_OPER_UP);
  g_assert_cmpuint(classify(fixture), ==, 0);
}

static void
test_garbage(Fixture *fixture, gconstpointer data)
{
  guint8 *noise = g_malloc(4096);

  g_assert_cmpuint(tg_netwatch_classify(fixture->state, noise, 0, NULL), ==, 0);
  memset(noise, 0xff, 4096);
  g_assert_cmpuint(tg_netwatch_classify(fixture->state, noise, 4096, NULL), ==, 0);
  memset(noise, 0, 4096);
  g_assert_cmpuint(tg_netwatch_classify(fixture->state, noise, 4096, NULL), ==, 0);
  /* random bytes, and random bytes behind a plausible header: never a crash
   * or a read past the end (valgrind, ASan) */
  for (int round = 0; round < 2000; round++) {
    gsize length = g_test_rand_int_range(0, 4096);
    guint8 *copy;

    for (gsize i = 0; i < length; i++)
      noise[i] = (guint8)g_test_rand_int_range(0, 256);
    if (length >= sizeof(struct nlmsghdr) && round % 2 == 0) {
      struct nlmsghdr *header = (struct nlmsghdr *)noise;
      static const guint16 types[] = { RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWADDR,
                                       RTM_DELADDR,  RTM_NEWLINK,  RTM_DELLINK };

      header->nlmsg_len = g_test_rand_int_range(0, (gint32)length + 1);
      header->nlmsg_type = types[round / 2 % G_N_ELEMENTS(types)];
    }
    copy = g_memdup2(noise, length); /* exactly @length bytes for valgrind */
    tg_netwatch_classify(fixture->state, copy, length, NULL);
    g_free(copy);
  }
  g_free(noise);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
#define ADD(path, func)                                                                  \
  g_test_add("/netwatch/" path, Fixture, NULL, fixture_set_up, func, fixture_tear_down)
  ADD("route/default", test_default_route);
  ADD("route/other", test_other_routes);
  ADD("route/not-main-table", test_route_not_main_table);
  ADD("route/cloned", test_route_cloned);
  ADD("route/multipath", test_route_multipath);
  ADD("address", test_address);
  ADD("link/flap", test_link_flap);
  ADD("link/name-printable", test_link_name_printable);
  ADD("burst", test_burst);
  ADD("truncated", test_truncated);
  ADD("wrong-lengths", test_wrong_lengths);
  ADD("garbage", test_garbage);
#undef ADD
  return g_test_run();
}
