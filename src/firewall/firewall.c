/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The firewall's table: what is in `inet tunnelgate` (nft/README.md) and the
 * state it is rebuilt from. Netlink plumbing lives in firewall-netlink.c. */
#include "firewall.h"

#include <arpa/inet.h>
#include <errno.h>
#include <glib-unix.h>
#include <linux/if_arp.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netlink.h>
#include <string.h>
#include <sys/socket.h>

#include <libnftnl/udata.h>

#include "firewall-netlink.h"
#include "firewall-private.h"
#include "log.h"
#include "tg-error.h"

#define TABLE "tunnelgate"
#define CHAIN_PRIORITY (-10) /* after DNAT (-100), before filter (0) */
#define REPAIR_DELAY_MS 100  /* coalesces the events of one foreign transaction */
#define REPAIR_RETRY_MS 1000
#define MAX_TAMPER_NOTES 8
#define MAX_LOG_PREFIX 127

/* nft's data type ids (for `nft list`), concatenations: (a << 6) | b */
#define TYPE_NFPROTO 2
#define TYPE_IPADDR 7
#define TYPE_IP6ADDR 8
#define TYPE_INET_SERVICE 13
#define TYPE_UID 24
#define TYPE_CONCAT(a, b) (((a) << 6) | (b))
#define TYPE_CONCAT3(a, b, c) (((((a) << 6) | (b)) << 6) | (c))
#define BYTEORDER_HOST_ENDIAN 1 /* nft's enum byteorder */

#define COUNTER_LOCKDOWN "lockdown_rejects"
#define COUNTER_LISTENER "listener_rejects"
#define COUNTER_CONNECT_BACK "connect_back_rejects"
#define COUNTER_SERVER "server_rejects"
#define COUNTER_OWNER "owner_rejects"
#define OWNER_LOG_PREFIX "tunnelgate-listener-user: "
#define COUNTER_UNKNOWN "server_unknown_drops"
#define UNKNOWN_LOG_PREFIX "tunnelgate-unknown-uid: "
#define UNKNOWN_TIMEOUT_MS 30000
#define UNKNOWN_SIZE 65536

typedef struct {
  const char *name;
  guint32 key_type;
  guint32 key_length;
  guint32 flags;
  gboolean host_order; /* for `nft list`: keys are not big-endian */
  guint8 fields[3];    /* NFT_SET_CONCAT: the length of each field */
  guint64 timeout_ms;  /* NFT_SET_TIMEOUT: the elements' lifetime */
  guint32 size;        /* 0: no limit */
} SetDefinition;

static const SetDefinition set_definitions[] = {
  { "ssh_ports", TYPE_INET_SERVICE, 2, NFT_SET_INTERVAL },
  { "ssh_servers_v4", TYPE_IPADDR, 4, NFT_SET_INTERVAL },
  { "ssh_servers_v6", TYPE_IP6ADDR, 16, NFT_SET_INTERVAL },
  { "exempt_uids", TYPE_UID, 4, 0, TRUE },
  /* nfproto . port, not just the port: a 2-byte key gets the kernel's bitmap
   * backend, whose element updates are linear in the number of elements */
  /* the listener guard, from other hosts: listeners on every address of a
   * family (nfproto . port) with their allowed sources (saddr . port), and
   * listeners on one address (daddr . port) with theirs (saddr . daddr . port) */
  { "listener_ports", TYPE_CONCAT(TYPE_NFPROTO, TYPE_INET_SERVICE), 8, 0 },
  { "listener_wild_sources_v4", TYPE_CONCAT(TYPE_IPADDR, TYPE_INET_SERVICE), 8, 0 },
  { "listener_wild_sources_v6", TYPE_CONCAT(TYPE_IP6ADDR, TYPE_INET_SERVICE), 20, 0 },
  { "listener_addrs_v4", TYPE_CONCAT(TYPE_IPADDR, TYPE_INET_SERVICE), 8, 0 },
  { "listener_addrs_v6", TYPE_CONCAT(TYPE_IP6ADDR, TYPE_INET_SERVICE), 20, 0 },
  { "listener_sources_v4", TYPE_CONCAT3(TYPE_IPADDR, TYPE_IPADDR, TYPE_INET_SERVICE), 12,
    0 },
  { "listener_sources_v6", TYPE_CONCAT3(TYPE_IP6ADDR, TYPE_IP6ADDR, TYPE_INET_SERVICE),
    36, 0 },
  /* ... and from this host: the listeners only some uids may use, and
   * uid . listener for each of those uids */
  { "owned_ports", TYPE_CONCAT(TYPE_NFPROTO, TYPE_INET_SERVICE), 8, 0 },
  { "owned_listeners_v4", TYPE_CONCAT(TYPE_IPADDR, TYPE_INET_SERVICE), 8, 0 },
  { "owned_listeners_v6", TYPE_CONCAT(TYPE_IP6ADDR, TYPE_INET_SERVICE), 20, 0 },
  { "listener_wild_users", TYPE_CONCAT3(TYPE_UID, TYPE_NFPROTO, TYPE_INET_SERVICE), 12,
    0 },
  { "listener_users_v4", TYPE_CONCAT3(TYPE_UID, TYPE_IPADDR, TYPE_INET_SERVICE), 12, 0 },
  { "listener_users_v6", TYPE_CONCAT3(TYPE_UID, TYPE_IP6ADDR, TYPE_INET_SERVICE), 24, 0 },
  { "connect_back_v4", TYPE_CONCAT(TYPE_IPADDR, TYPE_INET_SERVICE), 8, 0 },
  { "connect_back_v6", TYPE_CONCAT(TYPE_IP6ADDR, TYPE_INET_SERVICE), 20, 0 },
  /* server mode: SFTP-only users, and jump-host users with their allowed
   * uid . destination . port */
  { "sftp_only_uids", TYPE_UID, 4, 0, TRUE },
  { "jump_uids", TYPE_UID, 4, 0, TRUE },
  /* every uid the daemon has placed (0 always); the packets of others are
   * dropped, their uids added from the packet path to server_unknown_uids,
   * where the daemon finds them */
  { "server_known_uids", TYPE_UID, 4, 0, TRUE },
  { "server_unknown_uids",
    TYPE_UID,
    4,
    NFT_SET_TIMEOUT | NFT_SET_EVAL,
    TRUE,
    { 0 },
    UNKNOWN_TIMEOUT_MS,
    UNKNOWN_SIZE },
  /* uid . network . port range: an interval concatenation (the kernel's
   * pipapo backend, 5.6+), each element a start and an end key */
  { "jump_allow_v4",
    TYPE_CONCAT3(TYPE_UID, TYPE_IPADDR, TYPE_INET_SERVICE),
    12,
    NFT_SET_INTERVAL | NFT_SET_CONCAT,
    FALSE,
    { 4, 4, 2 } },
  { "jump_allow_v6",
    TYPE_CONCAT3(TYPE_UID, TYPE_IP6ADDR, TYPE_INET_SERVICE),
    24,
    NFT_SET_INTERVAL | NFT_SET_CONCAT,
    FALSE,
    { 4, 16, 2 } },
};

typedef struct {
  int family;
  guint16 port;
  gboolean has_address; /* FALSE: every address of the family */
  TgFirewallAddress address;
  gboolean guard_remote;
  GArray *sources; /* TgFirewallAddress, full length */
  gboolean guard_local;
  GArray *uids; /* guint32 */
  char *tunnel_id;
} Listener;

typedef struct {
  TgFirewallAddress address;
  guint16 port;
  char *tunnel_id;
} ConnectBack;

struct _TgFirewall {
  guint32 daemon_mark;
  guint32 connect_back_mark;
  gboolean egress_lockdown;
  gboolean server_mode;
  GArray *sftp_only_uids; /* guint32 */
  GArray *jump_uids;      /* guint32 */
  GArray *jump_rules;     /* TgFirewallJumpRule */
  GArray *known_uids;     /* guint32, without 0 (always known) */
  gboolean detect_ssh_banner;
  gboolean listener_guard;
  gboolean connect_back_pinning;
  char *log_prefix;
  TgFirewallOwnership ownership;
  GArray *ssh_ports;         /* TgPortRange */
  GArray *servers;           /* TgFirewallAddress */
  GArray *exempt_uids;       /* guint32 */
  GHashTable *listeners;     /* "family/address/port" -> Listener */
  GHashTable *connect_backs; /* "address/port" -> ConnectBack */

  TgNftSocket *socket; /* every batch: as owner, the table is bound to its port */
  gboolean owner;
  gboolean poison_next_batch;

  TgNftSocket *events;
  GMainContext *context;
  GSource *events_source;
  GSource *repair_source;
  gboolean tampered;
  gboolean tamper_in_commit; /* the next NEWGEN names who did it */
  GString *tamper_notes;
  guint n_tamper_notes;
  char *last_note;
  char *tamper_who; /* "nft[1234]" from NEWGEN */
  guint repairs;

  TgNftSocket *log; /* the owner rule's nflog group, while watched */
  GSource *log_source;
  TgFirewallRefusalFunc refusal_func;
  gpointer refusal_data;
  char *log_error; /* why there is no nflog socket, or NULL */
  TgFirewallUnknownFunc unknown_func;
  gpointer unknown_data;
  gboolean unknown_seen; /* while reading the log */
};

/* ---- small helpers ---- */

static guint
address_length(int family)
{
  return family == AF_INET ? 4 : 16;
}

static gboolean
validate_address(const TgFirewallAddress *address, gboolean full_length, const char *what,
                 GError **error)
{
  guint bits;

  if (address->family != AF_INET && address->family != AF_INET6) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "%s: address family %d is neither IPv4 nor IPv6", what, address->family);
    return FALSE;
  }
  bits = address_length(address->family) * 8;
  if (address->prefix > bits || (full_length && address->prefix != bits)) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "%s: prefix length /%u is not valid here (IPv%c, %s)", what,
                address->prefix, address->family == AF_INET ? '4' : '6',
                full_length ? "single address" : "0-" G_STRINGIFY(32) "/128");
    return FALSE;
  }
  return TRUE;
}

static char *
address_to_string(const TgFirewallAddress *address, gboolean with_prefix)
{
  char text[INET6_ADDRSTRLEN] = "?";

  inet_ntop(address->family, address->bytes, text, sizeof text);
  if (with_prefix && address->prefix != address_length(address->family) * 8)
    return g_strdup_printf("%s/%u", text, address->prefix);
  return g_strdup(text);
}

static char *
listener_key(int family, const TgFirewallAddress *address, guint16 port)
{
  g_autofree char *text = address != NULL ? address_to_string(address, FALSE) : NULL;

  return g_strdup_printf("%d/%s/%u", family, text != NULL ? text : "*", port);
}

static char *
connect_back_key(const TgFirewallAddress *address, guint16 port)
{
  g_autofree char *text = address_to_string(address, FALSE);
  return g_strdup_printf("%s/%u", text, port);
}

static void
listener_free(gpointer data)
{
  Listener *listener = data;
  g_array_unref(listener->sources);
  g_array_unref(listener->uids);
  g_free(listener->tunnel_id);
  g_free(listener);
}

static void
connect_back_free(gpointer data)
{
  ConnectBack *connect_back = data;
  g_free(connect_back->tunnel_id);
  g_free(connect_back);
}

/* ---- element writer: fills NEWSETELEM/DELSETELEM messages, chunked ---- */

typedef struct {
  TgNftBatch *batch;
  guint16 msg_type;
  const char *set_name;
  struct nftnl_set *set;
  guint count;
} ElementWriter;

static struct nftnl_set *
set_reference(const char *name)
{
  struct nftnl_set *set = nftnl_set_alloc();
  nftnl_set_set_str(set, NFTNL_SET_TABLE, TABLE);
  nftnl_set_set_str(set, NFTNL_SET_NAME, name);
  nftnl_set_set_u32(set, NFTNL_SET_FAMILY, NFPROTO_INET);
  return set;
}

static void
writer_flush(ElementWriter *writer)
{
  g_autofree char *what = NULL;

  if (writer->set == NULL)
    return;
  what = g_strdup_printf("%s elements of set %s",
                         writer->msg_type == NFT_MSG_NEWSETELEM ? "adding" : "deleting",
                         writer->set_name);
  tg_nft_batch_add_elems(writer->batch, writer->msg_type,
                         writer->msg_type == NFT_MSG_NEWSETELEM ? NLM_F_CREATE : 0,
                         writer->set, what);
  nftnl_set_free(writer->set);
  writer->set = NULL;
  writer->count = 0;
}

static void
writer_add_range(ElementWriter *writer, const void *key, const void *key_end,
                 guint32 length, guint32 flags)
{
  struct nftnl_set_elem *element = nftnl_set_elem_alloc();

  if (writer->set == NULL)
    writer->set = set_reference(writer->set_name);
  nftnl_set_elem_set(element, NFTNL_SET_ELEM_KEY, key, length);
  if (key_end != NULL)
    nftnl_set_elem_set(element, NFTNL_SET_ELEM_KEY_END, key_end, length);
  if (flags != 0)
    nftnl_set_elem_set_u32(element, NFTNL_SET_ELEM_FLAGS, flags);
  nftnl_set_elem_add(writer->set, element);
  if (++writer->count == TG_NFT_MAX_ELEMS_PER_MESSAGE)
    writer_flush(writer);
}

static void
writer_add(ElementWriter *writer, const void *key, guint32 length, guint32 flags)
{
  writer_add_range(writer, key, NULL, length, flags);
}

static void
writer_start(ElementWriter *writer, TgNftBatch *batch, guint16 msg_type,
             const char *set_name)
{
  writer_flush(writer);
  writer->batch = batch;
  writer->msg_type = msg_type;
  writer->set_name = set_name;
}

/* An empty DELSETELEM message flushes the set. */
static void
batch_flush_set(TgNftBatch *batch, const char *set_name)
{
  struct nftnl_set *set = set_reference(set_name);
  g_autofree char *what = g_strdup_printf("flushing set %s", set_name);

  tg_nft_batch_add_elems(batch, NFT_MSG_DELSETELEM, 0, set, what);
  nftnl_set_free(set);
}

/* Keys of the concatenated sets: address, then the port in a 4-byte slot. */
static guint32
concat_key(guint8 *key, const TgFirewallAddress *address, guint16 port)
{
  guint32 length = address_length(address->family);
  guint16 port_be = htons(port);

  memset(key, 0, 20);
  memcpy(key, address->bytes, length);
  memcpy(key + length, &port_be, sizeof port_be);
  return length + 4;
}

/* ---- intervals: merged ranges, written as start / end+1 (INTERVAL_END) ---- */

typedef struct {
  guint8 first[16];
  guint8 last[16];
} ByteRange;

static gboolean
bytes_increment(guint8 *bytes, guint length)
{
  for (guint i = length; i-- > 0;)
    if (++bytes[i] != 0)
      return TRUE;
  return FALSE; /* wrapped: was the last value of the key space */
}

static guint compare_length; /* qsort has no user data */

static int
compare_ranges(const void *a, const void *b)
{
  return memcmp(((const ByteRange *)a)->first, ((const ByteRange *)b)->first,
                compare_length);
}

static void
write_intervals(ElementWriter *writer, GArray *ranges, guint length)
{
  compare_length = length;
  g_array_sort(ranges, compare_ranges);

  for (guint i = 0; i < ranges->len;) {
    ByteRange merged = g_array_index(ranges, ByteRange, i);
    guint8 end[16];
    gboolean bounded;

    for (i++; i < ranges->len; i++) {
      const ByteRange *next = &g_array_index(ranges, ByteRange, i);
      memcpy(end, merged.last, length);
      if (!bytes_increment(end, length) || memcmp(next->first, end, length) <= 0) {
        if (memcmp(next->last, merged.last, length) > 0)
          memcpy(merged.last, next->last, length);
        continue;
      }
      break;
    }
    memcpy(end, merged.last, length);
    bounded = bytes_increment(end, length);
    writer_add(writer, merged.first, length, 0);
    if (bounded)
      writer_add(writer, end, length, NFT_SET_ELEM_INTERVAL_END);
  }
  writer_flush(writer);
}

static void
write_ssh_ports(TgFirewall *firewall, TgNftBatch *batch)
{
  ElementWriter writer = { 0 };
  g_autoptr(GArray) ranges = g_array_new(FALSE, TRUE, sizeof(ByteRange));

  for (guint i = 0; i < firewall->ssh_ports->len; i++) {
    const TgPortRange *ports = &g_array_index(firewall->ssh_ports, TgPortRange, i);
    ByteRange range = { 0 };
    guint16 first = htons(ports->first), last = htons(ports->last);

    memcpy(range.first, &first, 2);
    memcpy(range.last, &last, 2);
    g_array_append_val(ranges, range);
  }
  writer_start(&writer, batch, NFT_MSG_NEWSETELEM, "ssh_ports");
  write_intervals(&writer, ranges, 2);
}

static void
write_servers(TgFirewall *firewall, TgNftBatch *batch)
{
  const int families[] = { AF_INET, AF_INET6 };
  const char *const names[] = { "ssh_servers_v4", "ssh_servers_v6" };

  for (guint f = 0; f < G_N_ELEMENTS(families); f++) {
    ElementWriter writer = { 0 };
    g_autoptr(GArray) ranges = g_array_new(FALSE, TRUE, sizeof(ByteRange));
    guint length = address_length(families[f]);

    for (guint i = 0; i < firewall->servers->len; i++) {
      const TgFirewallAddress *server =
          &g_array_index(firewall->servers, TgFirewallAddress, i);
      ByteRange range = { 0 };

      if (server->family != families[f])
        continue;
      for (guint bit = 0; bit < length * 8; bit++) {
        guint8 mask = 0x80 >> (bit % 8);
        gboolean set = bit < server->prefix && (server->bytes[bit / 8] & mask);
        if (set)
          range.first[bit / 8] |= mask;
        if (set || bit >= server->prefix)
          range.last[bit / 8] |= mask;
      }
      g_array_append_val(ranges, range);
    }
    writer_start(&writer, batch, NFT_MSG_NEWSETELEM, names[f]);
    write_intervals(&writer, ranges, length);
  }
}

static void
write_uid_set(TgNftBatch *batch, const char *set_name, GArray *uids)
{
  ElementWriter writer = { 0 };

  writer_start(&writer, batch, NFT_MSG_NEWSETELEM, set_name);
  for (guint i = 0; i < uids->len; i++)
    writer_add(&writer, &g_array_index(uids, guint32, i), 4, 0);
  writer_flush(&writer);
}

/* uid (host order) . address . port (network order, in a 4-byte slot) */
static void
write_jump_rules(TgNftBatch *batch, GArray *rules)
{
  for (int v6 = 0; v6 < 2; v6++) {
    ElementWriter writer = { 0 };

    writer_start(&writer, batch, NFT_MSG_NEWSETELEM,
                 v6 ? "jump_allow_v6" : "jump_allow_v4");
    for (guint i = 0; i < rules->len; i++) {
      const TgFirewallJumpRule *rule = &g_array_index(rules, TgFirewallJumpRule, i);
      TgFirewallAddress first = rule->network, last = rule->network;
      guint8 key[24], key_end[24];
      guint32 length, n = address_length(rule->network.family);

      if ((rule->network.family == AF_INET6) != v6)
        continue;
      for (guint bit = rule->network.prefix; bit < n * 8; bit++) {
        first.bytes[bit / 8] &= ~(0x80 >> (bit % 8));
        last.bytes[bit / 8] |= 0x80 >> (bit % 8);
      }
      memcpy(key, &rule->uid, 4);
      memcpy(key_end, &rule->uid, 4);
      length = 4 + concat_key(key + 4, &first, rule->first_port);
      concat_key(key_end + 4, &last, rule->last_port);
      writer_add_range(&writer, key, key_end, length, 0);
    }
    writer_flush(&writer);
  }
}

/* nfproto . port, the port in a 4-byte slot */
static guint32
family_port_key(guint8 *key, int family, guint16 port)
{
  guint16 port_be = htons(port);

  memset(key, 0, 8);
  key[0] = family == AF_INET ? NFPROTO_IPV4 : NFPROTO_IPV6;
  memcpy(key + 4, &port_be, sizeof port_be);
  return 8;
}

static void
write_server_sets(TgFirewall *firewall, TgNftBatch *batch)
{
  const guint32 root = 0;

  write_uid_set(batch, "sftp_only_uids", firewall->sftp_only_uids);
  write_uid_set(batch, "jump_uids", firewall->jump_uids);
  write_uid_set(batch, "server_known_uids", firewall->known_uids);
  {
    ElementWriter writer = { 0 };

    writer_start(&writer, batch, NFT_MSG_NEWSETELEM, "server_known_uids");
    writer_add(&writer, &root, 4, 0);
    writer_flush(&writer);
  }
  write_jump_rules(batch, firewall->jump_rules);
}

static void
write_listener(TgNftBatch *batch, const Listener *listener, guint16 msg_type)
{
  ElementWriter writer = { 0 };
  gboolean v4 = listener->family == AF_INET;
  guint alen = address_length(listener->family);
  guint8 key[48];
  guint32 length;

  if (listener->guard_remote) {
    writer_start(&writer, batch, msg_type,
                 !listener->has_address ? "listener_ports"
                 : v4                   ? "listener_addrs_v4"
                                        : "listener_addrs_v6");
    length = listener->has_address
                 ? concat_key(key, &listener->address, listener->port)
                 : family_port_key(key, listener->family, listener->port);
    writer_add(&writer, key, length, 0);
    writer_start(&writer, batch, msg_type,
                 !listener->has_address
                     ? (v4 ? "listener_wild_sources_v4" : "listener_wild_sources_v6")
                 : v4 ? "listener_sources_v4"
                      : "listener_sources_v6");
    for (guint i = 0; i < listener->sources->len; i++) {
      const TgFirewallAddress *source =
          &g_array_index(listener->sources, TgFirewallAddress, i);

      if (listener->has_address) {
        memcpy(key, source->bytes, alen);
        length = alen + concat_key(key + alen, &listener->address, listener->port);
      } else {
        length = concat_key(key, source, listener->port);
      }
      writer_add(&writer, key, length, 0);
    }
  }
  if (listener->guard_local) {
    writer_start(&writer, batch, msg_type,
                 !listener->has_address ? "owned_ports"
                 : v4                   ? "owned_listeners_v4"
                                        : "owned_listeners_v6");
    length = listener->has_address
                 ? concat_key(key, &listener->address, listener->port)
                 : family_port_key(key, listener->family, listener->port);
    writer_add(&writer, key, length, 0);
    writer_start(&writer, batch, msg_type,
                 !listener->has_address ? "listener_wild_users"
                 : v4                   ? "listener_users_v4"
                                        : "listener_users_v6");
    for (guint i = 0; i < listener->uids->len; i++) {
      guint32 uid = g_array_index(listener->uids, guint32, i);

      memcpy(key, &uid, 4);
      length = 4 + (listener->has_address
                        ? concat_key(key + 4, &listener->address, listener->port)
                        : family_port_key(key + 4, listener->family, listener->port));
      writer_add(&writer, key, length, 0);
    }
  }
  writer_flush(&writer);
}

static void
write_connect_back(TgNftBatch *batch, const ConnectBack *connect_back, guint16 msg_type)
{
  ElementWriter writer = { 0 };
  guint8 key[20];
  guint32 length = concat_key(key, &connect_back->address, connect_back->port);

  writer_start(&writer, batch, msg_type,
               connect_back->address.family == AF_INET ? "connect_back_v4"
                                                       : "connect_back_v6");
  writer_add(&writer, key, length, 0);
  writer_flush(&writer);
}

/* ---- rules ---- */

static struct nftnl_rule *
rule_new(const char *chain)
{
  struct nftnl_rule *rule = nftnl_rule_alloc();
  nftnl_rule_set_str(rule, NFTNL_RULE_TABLE, TABLE);
  nftnl_rule_set_str(rule, NFTNL_RULE_CHAIN, chain);
  nftnl_rule_set_u32(rule, NFTNL_RULE_FAMILY, NFPROTO_INET);
  return rule;
}

static void
batch_rule(TgNftBatch *batch, struct nftnl_rule *rule, const char *what)
{
  g_autofree char *text = g_strdup_printf("adding rule %s in chain %s", what,
                                          nftnl_rule_get_str(rule, NFTNL_RULE_CHAIN));
  tg_nft_batch_add_rule(batch, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, rule, text);
  nftnl_rule_free(rule);
}

/* meta l4proto tcp tcp flags & (fin|syn|rst|ack) == syn */
static void
match_new_tcp(struct nftnl_rule *rule)
{
  guint8 tcp = IPPROTO_TCP, flags_mask = 0x17, syn = 0x02;

  tg_nft_add_meta(rule, NFT_META_L4PROTO, NFT_REG_1);
  tg_nft_add_cmp(rule, NFT_REG_1, NFT_CMP_EQ, &tcp, 1);
  tg_nft_add_payload(rule, NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1, NFT_REG_1);
  tg_nft_add_bitwise(rule, NFT_REG_1, &flags_mask, 1);
  tg_nft_add_cmp(rule, NFT_REG_1, NFT_CMP_EQ, &syn, 1);
}

static void
match_mark(struct nftnl_rule *rule, guint32 mark)
{
  tg_nft_add_meta(rule, NFT_META_MARK, NFT_REG_1);
  tg_nft_add_cmp(rule, NFT_REG_1, NFT_CMP_EQ, &mark, sizeof mark);
}

static void
match_nfproto(struct nftnl_rule *rule, int family)
{
  guint8 proto = family == AF_INET ? NFPROTO_IPV4 : NFPROTO_IPV6;

  tg_nft_add_meta(rule, NFT_META_NFPROTO, NFT_REG_1);
  tg_nft_add_cmp(rule, NFT_REG_1, NFT_CMP_EQ, &proto, 1);
}

static void
load_tcp_dport(struct nftnl_rule *rule, guint32 reg)
{
  tg_nft_add_payload(rule, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, reg);
}

/* ip/ip6 saddr or daddr into NFT_REG32_00.. */
static void
load_address(struct nftnl_rule *rule, int family, gboolean source)
{
  guint32 offset = family == AF_INET ? (source ? 12 : 16) : (source ? 8 : 24);
  tg_nft_add_payload(rule, NFT_PAYLOAD_NETWORK_HEADER, offset, address_length(family),
                     NFT_REG32_00);
}

/* address . tcp dport in @set */
static void
match_address_port(struct nftnl_rule *rule, int family, gboolean source, const char *set)
{
  match_nfproto(rule, family);
  load_address(rule, family, source);
  load_tcp_dport(rule, family == AF_INET ? NFT_REG32_01 : NFT_REG32_04);
  tg_nft_add_lookup(rule, NFT_REG32_00, set);
}

static void
reject_counted(TgFirewall *firewall, struct nftnl_rule *rule, const char *counter,
               const char *log_prefix)
{
  tg_nft_add_counter_ref(rule, counter);
  if (log_prefix != NULL)
    tg_nft_add_log(rule, log_prefix);
  tg_nft_add_reject_tcp_reset(rule);
}

/* DetectSshBanner: an SSH client sends its identification string first
 * thing ("SSH-2.0-..."; "SSH-1.99-" for old compatibility), on any port:
 * the first payload of a user's own ssh to a server on port 443 is reset
 * here. Loopback (a client of the daemon's own listeners), the daemon's
 * sockets, root's (sshd's accepted sockets answer with a banner too) and
 * exempt users' pass. The payload of every outgoing TCP packet is compared
 * (8 bytes at the start of the TCP payload): no conntrack needed. */
static void
write_banner_rules(TgFirewall *firewall, TgNftBatch *batch)
{
  static const char *const banners[] = { "SSH-2.0-", "SSH-1.99" };
  struct nftnl_rule *rule;
  guint8 tcp = IPPROTO_TCP;
  guint16 loopback = ARPHRD_LOOPBACK;
  guint32 root = 0;

  for (gsize i = 0; i < G_N_ELEMENTS(banners); i++) {
    rule = rule_new("output");
    tg_nft_add_meta(rule, NFT_META_L4PROTO, NFT_REG_1);
    tg_nft_add_cmp(rule, NFT_REG_1, NFT_CMP_EQ, &tcp, 1);
    tg_nft_add_payload(rule, NFT_PAYLOAD_INNER_HEADER, 0, 8, NFT_REG_1);
    tg_nft_add_cmp(rule, NFT_REG_1, NFT_CMP_EQ, banners[i], 8);
    tg_nft_add_verdict(rule, NFT_JUMP, "banner");
    batch_rule(batch, rule, "ssh banner -> banner");
  }
  rule = rule_new("banner");
  tg_nft_add_meta(rule, NFT_META_OIFTYPE, NFT_REG_1);
  tg_nft_add_cmp(rule, NFT_REG_1, NFT_CMP_EQ, &loopback, sizeof loopback);
  tg_nft_add_verdict(rule, NF_ACCEPT, NULL);
  batch_rule(batch, rule, "loopback accept");

  rule = rule_new("banner");
  match_mark(rule, firewall->daemon_mark);
  tg_nft_add_verdict(rule, NF_ACCEPT, NULL);
  batch_rule(batch, rule, "daemon mark accept");

  rule = rule_new("banner");
  tg_nft_add_meta(rule, NFT_META_SKUID, NFT_REG_1);
  tg_nft_add_cmp(rule, NFT_REG_1, NFT_CMP_EQ, &root, sizeof root);
  tg_nft_add_verdict(rule, NF_ACCEPT, NULL);
  batch_rule(batch, rule, "root accept");

  rule = rule_new("banner");
  tg_nft_add_meta(rule, NFT_META_SKUID, NFT_REG_1);
  tg_nft_add_lookup(rule, NFT_REG_1, "exempt_uids");
  tg_nft_add_verdict(rule, NF_ACCEPT, NULL);
  batch_rule(batch, rule, "exempt uid accept");

  rule = rule_new("banner");
  reject_counted(firewall, rule, COUNTER_LOCKDOWN,
                 firewall->log_prefix != NULL ? "tunnelgate-banner: " : NULL);
  batch_rule(batch, rule, "ssh banner reject");
}

/* Server mode (nft/README.md, "Server mode"): everything the sockets of
 * SFTP-only users send or receive is refused (forwarding is all those
 * sockets do: the SSH connection itself is root's sshd's), and new TCP
 * connections of jump-host users reach only their allowed destinations.
 * First in the base chains: an accept further down must not skip them. */
static void
write_server_rules(TgFirewall *firewall, TgNftBatch *batch)
{
  struct nftnl_rule *rule;
  const char *const base[] = { "output", "input" };
  guint8 tcp = IPPROTO_TCP;

  for (guint i = 0; i < G_N_ELEMENTS(base); i++) {
    rule = rule_new(base[i]);
    tg_nft_add_meta(rule, NFT_META_SKUID, NFT_REG_1);
    tg_nft_add_lookup(rule, NFT_REG_1, "sftp_only_uids");
    tg_nft_add_verdict(rule, NFT_JUMP, "server_sftp");
    batch_rule(batch, rule, "sftp-only uid -> server_sftp");
  }
  rule = rule_new("output");
  match_new_tcp(rule);
  tg_nft_add_meta(rule, NFT_META_SKUID, NFT_REG_1);
  tg_nft_add_lookup(rule, NFT_REG_1, "jump_uids");
  tg_nft_add_verdict(rule, NFT_JUMP, "server_jump");
  batch_rule(batch, rule, "jump-host uid -> server_jump");
  for (guint i = 0; i < G_N_ELEMENTS(base); i++) {
    rule = rule_new(base[i]);
    tg_nft_add_meta(rule, NFT_META_SKUID, NFT_REG_1);
    tg_nft_add_lookup_inverted(rule, NFT_REG_1, "server_known_uids");
    tg_nft_add_verdict(rule, NFT_JUMP, "server_unknown");
    batch_rule(batch, rule, "unknown uid -> server_unknown");
  }

  /* a full set makes the dynset fail and end its rule: the drop is a rule
   * of its own */
  rule = rule_new("server_unknown");
  tg_nft_add_meta(rule, NFT_META_SKUID, NFT_REG_1);
  tg_nft_add_dynset_add(rule, NFT_REG_1, "server_unknown_uids");
  batch_rule(batch, rule, "unknown uid -> server_unknown_uids");
  rule = rule_new("server_unknown");
  tg_nft_add_counter_ref(rule, COUNTER_UNKNOWN);
  tg_nft_add_log_group(rule, TG_FIREWALL_LOG_GROUP, UNKNOWN_LOG_PREFIX);
  tg_nft_add_verdict(rule, NF_DROP, NULL);
  batch_rule(batch, rule, "unknown uid drop");

  rule = rule_new("server_sftp");
  tg_nft_add_meta(rule, NFT_META_L4PROTO, NFT_REG_1);
  tg_nft_add_cmp(rule, NFT_REG_1, NFT_CMP_EQ, &tcp, 1);
  reject_counted(firewall, rule, COUNTER_SERVER,
                 firewall->log_prefix != NULL ? "tunnelgate-sftp-only: " : NULL);
  batch_rule(batch, rule, "sftp-only tcp reject");
  rule = rule_new("server_sftp");
  tg_nft_add_counter_ref(rule, COUNTER_SERVER);
  tg_nft_add_verdict(rule, NF_DROP, NULL);
  batch_rule(batch, rule, "sftp-only drop");

  for (int v6 = 0; v6 < 2; v6++) {
    int family = v6 ? AF_INET6 : AF_INET;

    rule = rule_new("server_jump");
    match_nfproto(rule, family);
    tg_nft_add_meta(rule, NFT_META_SKUID, NFT_REG32_00);
    tg_nft_add_payload(rule, NFT_PAYLOAD_NETWORK_HEADER, v6 ? 24 : 16,
                       address_length(family), NFT_REG32_01);
    load_tcp_dport(rule, v6 ? NFT_REG32_05 : NFT_REG32_02);
    tg_nft_add_lookup(rule, NFT_REG32_00, v6 ? "jump_allow_v6" : "jump_allow_v4");
    tg_nft_add_verdict(rule, NF_ACCEPT, NULL);
    batch_rule(batch, rule, "jump-host destination accept");
  }
  rule = rule_new("server_jump");
  reject_counted(firewall, rule, COUNTER_SERVER,
                 firewall->log_prefix != NULL ? "tunnelgate-jump: " : NULL);
  batch_rule(batch, rule, "jump-host reject");
}

static void
write_egress_rules(TgFirewall *firewall, TgNftBatch *batch)
{
  struct nftnl_rule *rule;
  const char *log = firewall->log_prefix;

  rule = rule_new("output");
  match_new_tcp(rule);
  tg_nft_add_verdict(rule, NFT_JUMP, "egress");
  batch_rule(batch, rule, "new tcp -> egress");

  if (firewall->connect_back_pinning) {
    rule = rule_new("egress");
    match_mark(rule, firewall->connect_back_mark);
    tg_nft_add_verdict(rule, NFT_JUMP, "pin");
    batch_rule(batch, rule, "connect-back mark -> pin");
  }
  rule = rule_new("egress");
  match_mark(rule, firewall->daemon_mark);
  tg_nft_add_verdict(rule, NF_ACCEPT, NULL);
  batch_rule(batch, rule, "daemon mark accept");

  if (firewall->egress_lockdown) {
    rule = rule_new("egress");
    tg_nft_add_meta(rule, NFT_META_SKUID, NFT_REG_1);
    tg_nft_add_lookup(rule, NFT_REG_1, "exempt_uids");
    tg_nft_add_verdict(rule, NF_ACCEPT, NULL);
    batch_rule(batch, rule, "exempt uid accept");

    rule = rule_new("egress");
    load_tcp_dport(rule, NFT_REG_1);
    tg_nft_add_lookup(rule, NFT_REG_1, "ssh_ports");
    reject_counted(firewall, rule, COUNTER_LOCKDOWN, log);
    batch_rule(batch, rule, "ssh port reject");

    for (int i = 0; i < 2; i++) {
      int family = i == 0 ? AF_INET : AF_INET6;
      rule = rule_new("egress");
      match_nfproto(rule, family);
      load_address(rule, family, FALSE);
      tg_nft_add_lookup(rule, NFT_REG32_00, i == 0 ? "ssh_servers_v4" : "ssh_servers_v6");
      reject_counted(firewall, rule, COUNTER_LOCKDOWN, log);
      batch_rule(batch, rule, "ssh server reject");
    }
  }

  if (firewall->detect_ssh_banner)
    write_banner_rules(firewall, batch);

  for (int i = 0; i < 2; i++) {
    rule = rule_new("pin");
    match_address_port(rule, i == 0 ? AF_INET : AF_INET6, FALSE,
                       i == 0 ? "connect_back_v4" : "connect_back_v6");
    tg_nft_add_verdict(rule, NF_ACCEPT, NULL);
    batch_rule(batch, rule, "connect-back destination accept");
  }
  rule = rule_new("pin");
  reject_counted(firewall, rule, COUNTER_CONNECT_BACK,
                 log != NULL ? "tunnelgate-connect-back: " : NULL);
  batch_rule(batch, rule, "connect-back reject");
}

/* The listener guard, from other hosts (input; nft/README.md): loopback
 * passes (this host's own connections are the owner rules' business), then
 * each listener's allowed sources, then the guarded listeners are reset. */
static void
write_guard_rules(TgFirewall *firewall, TgNftBatch *batch)
{
  struct nftnl_rule *rule;
  guint16 loopback = ARPHRD_LOOPBACK;
  const char *log = firewall->log_prefix != NULL ? "tunnelgate-listener: " : NULL;

  if (firewall->listener_guard) {
    rule = rule_new("input");
    match_new_tcp(rule);
    tg_nft_add_verdict(rule, NFT_JUMP, "guard");
    batch_rule(batch, rule, "new tcp -> guard");
  }
  rule = rule_new("guard");
  tg_nft_add_meta(rule, NFT_META_IIFTYPE, NFT_REG_1);
  tg_nft_add_cmp(rule, NFT_REG_1, NFT_CMP_EQ, &loopback, sizeof loopback);
  tg_nft_add_verdict(rule, NF_ACCEPT, NULL);
  batch_rule(batch, rule, "loopback accept");

  for (int i = 0; i < 2; i++) {
    int family = i == 0 ? AF_INET : AF_INET6;
    guint words = address_length(family) / 4;

    rule = rule_new("guard");
    match_nfproto(rule, family);
    load_address(rule, family, TRUE);
    tg_nft_add_payload(rule, NFT_PAYLOAD_NETWORK_HEADER, family == AF_INET ? 16 : 24,
                       address_length(family), NFT_REG32_00 + words);
    load_tcp_dport(rule, NFT_REG32_00 + 2 * words);
    tg_nft_add_lookup(rule, NFT_REG32_00,
                      i == 0 ? "listener_sources_v4" : "listener_sources_v6");
    tg_nft_add_verdict(rule, NF_ACCEPT, NULL);
    batch_rule(batch, rule, "allowed source accept");

    rule = rule_new("guard");
    match_address_port(rule, family, TRUE,
                       i == 0 ? "listener_wild_sources_v4" : "listener_wild_sources_v6");
    tg_nft_add_verdict(rule, NF_ACCEPT, NULL);
    batch_rule(batch, rule, "allowed source (any address) accept");
  }
  for (int i = 0; i < 2; i++) {
    rule = rule_new("guard");
    match_address_port(rule, i == 0 ? AF_INET : AF_INET6, FALSE,
                       i == 0 ? "listener_addrs_v4" : "listener_addrs_v6");
    reject_counted(firewall, rule, COUNTER_LISTENER, log);
    batch_rule(batch, rule, "listener reject");
  }
  rule = rule_new("guard");
  tg_nft_add_meta(rule, NFT_META_NFPROTO, NFT_REG32_00);
  load_tcp_dport(rule, NFT_REG32_01);
  tg_nft_add_lookup(rule, NFT_REG32_00, "listener_ports");
  reject_counted(firewall, rule, COUNTER_LISTENER, log);
  batch_rule(batch, rule, "listener (any address) reject");
}

/* counter, then the daemon's log group (who was refused), then reset */
static void
reject_owner(struct nftnl_rule *rule)
{
  tg_nft_add_counter_ref(rule, COUNTER_OWNER);
  tg_nft_add_log_group(rule, TG_FIREWALL_LOG_GROUP, OWNER_LOG_PREFIX);
  tg_nft_add_reject_tcp_reset(rule);
}

/* The listener guard, from this host (output; nft/README.md): a new
 * connection through loopback (every connection between two sockets of this
 * host) to a listener only some users may use passes if its socket is root's
 * or one of theirs, and is reset otherwise. `return`, not `accept`: the
 * egress rules still see the packet. */
static void
write_owner_rules(TgFirewall *firewall, TgNftBatch *batch)
{
  struct nftnl_rule *rule;
  guint16 loopback = ARPHRD_LOOPBACK;
  guint32 root = 0;

  rule = rule_new("output");
  match_new_tcp(rule);
  tg_nft_add_meta(rule, NFT_META_OIFTYPE, NFT_REG_1);
  tg_nft_add_cmp(rule, NFT_REG_1, NFT_CMP_EQ, &loopback, sizeof loopback);
  tg_nft_add_verdict(rule, NFT_JUMP, "owners");
  batch_rule(batch, rule, "new tcp on loopback -> owners");

  rule = rule_new("owners");
  tg_nft_add_meta(rule, NFT_META_SKUID, NFT_REG_1);
  tg_nft_add_cmp(rule, NFT_REG_1, NFT_CMP_EQ, &root, sizeof root);
  tg_nft_add_verdict(rule, NFT_RETURN, NULL);
  batch_rule(batch, rule, "root return");

  for (int i = 0; i < 2; i++) {
    int family = i == 0 ? AF_INET : AF_INET6;

    rule = rule_new("owners");
    match_nfproto(rule, family);
    tg_nft_add_meta(rule, NFT_META_SKUID, NFT_REG32_00);
    tg_nft_add_payload(rule, NFT_PAYLOAD_NETWORK_HEADER, i == 0 ? 16 : 24,
                       address_length(family), NFT_REG32_01);
    load_tcp_dport(rule, NFT_REG32_01 + address_length(family) / 4);
    tg_nft_add_lookup(rule, NFT_REG32_00,
                      i == 0 ? "listener_users_v4" : "listener_users_v6");
    tg_nft_add_verdict(rule, NFT_RETURN, NULL);
    batch_rule(batch, rule, "listener user return");
  }
  rule = rule_new("owners");
  tg_nft_add_meta(rule, NFT_META_SKUID, NFT_REG32_00);
  tg_nft_add_meta(rule, NFT_META_NFPROTO, NFT_REG32_01);
  load_tcp_dport(rule, NFT_REG32_02);
  tg_nft_add_lookup(rule, NFT_REG32_00, "listener_wild_users");
  tg_nft_add_verdict(rule, NFT_RETURN, NULL);
  batch_rule(batch, rule, "listener user (any address) return");

  for (int i = 0; i < 2; i++) {
    rule = rule_new("owners");
    match_address_port(rule, i == 0 ? AF_INET : AF_INET6, FALSE,
                       i == 0 ? "owned_listeners_v4" : "owned_listeners_v6");
    reject_owner(rule);
    batch_rule(batch, rule, "other user reject");
  }
  rule = rule_new("owners");
  tg_nft_add_meta(rule, NFT_META_NFPROTO, NFT_REG32_00);
  load_tcp_dport(rule, NFT_REG32_01);
  tg_nft_add_lookup(rule, NFT_REG32_00, "owned_ports");
  reject_owner(rule);
  batch_rule(batch, rule, "other user (any address) reject");
}

/* ---- the whole table ---- */

static struct nftnl_table *
table_new(gboolean with_flags, guint32 flags)
{
  struct nftnl_table *table = nftnl_table_alloc();
  nftnl_table_set_str(table, NFTNL_TABLE_NAME, TABLE);
  nftnl_table_set_u32(table, NFTNL_TABLE_FAMILY, NFPROTO_INET);
  if (with_flags)
    nftnl_table_set_u32(table, NFTNL_TABLE_FLAGS, flags);
  return table;
}

/* "add table; delete table": deletes the table whether it exists or not. */
static void
batch_delete_table(TgNftBatch *batch)
{
  struct nftnl_table *table = table_new(FALSE, 0);

  tg_nft_batch_add_table(batch, NFT_MSG_NEWTABLE, NLM_F_CREATE, table,
                         "taking over table inet " TABLE);
  tg_nft_batch_add_table(batch, NFT_MSG_DELTABLE, 0, table,
                         "deleting the old table inet " TABLE);
  nftnl_table_free(table);
}

static void
batch_chain(TgNftBatch *batch, const char *name, int hook)
{
  struct nftnl_chain *chain = nftnl_chain_alloc();
  g_autofree char *what = g_strdup_printf("adding chain %s", name);

  nftnl_chain_set_str(chain, NFTNL_CHAIN_TABLE, TABLE);
  nftnl_chain_set_str(chain, NFTNL_CHAIN_NAME, name);
  nftnl_chain_set_u32(chain, NFTNL_CHAIN_FAMILY, NFPROTO_INET);
  if (hook >= 0) {
    nftnl_chain_set_u32(chain, NFTNL_CHAIN_HOOKNUM, (guint32)hook);
    nftnl_chain_set_s32(chain, NFTNL_CHAIN_PRIO, CHAIN_PRIORITY);
    nftnl_chain_set_str(chain, NFTNL_CHAIN_TYPE, "filter");
    nftnl_chain_set_u32(chain, NFTNL_CHAIN_POLICY, NF_ACCEPT);
  }
  tg_nft_batch_add_chain(batch, NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_EXCL, chain, what);
  nftnl_chain_free(chain);
}

static void
batch_counter(TgNftBatch *batch, const char *name)
{
  struct nftnl_obj *obj = nftnl_obj_alloc();
  g_autofree char *what = g_strdup_printf("adding counter %s", name);

  nftnl_obj_set_str(obj, NFTNL_OBJ_TABLE, TABLE);
  nftnl_obj_set_str(obj, NFTNL_OBJ_NAME, name);
  nftnl_obj_set_u32(obj, NFTNL_OBJ_FAMILY, NFPROTO_INET);
  nftnl_obj_set_u32(obj, NFTNL_OBJ_TYPE, NFT_OBJECT_COUNTER);
  nftnl_obj_set_u64(obj, NFTNL_OBJ_CTR_PKTS, 0);
  nftnl_obj_set_u64(obj, NFTNL_OBJ_CTR_BYTES, 0);
  tg_nft_batch_add_obj(batch, NFT_MSG_NEWOBJ, NLM_F_CREATE | NLM_F_EXCL, obj, what);
  nftnl_obj_free(obj);
}

static void
batch_sets(TgNftBatch *batch)
{
  for (guint i = 0; i < G_N_ELEMENTS(set_definitions); i++) {
    const SetDefinition *definition = &set_definitions[i];
    struct nftnl_set *set = set_reference(definition->name);
    g_autofree char *what = g_strdup_printf("adding set %s", definition->name);

    nftnl_set_set_u32(set, NFTNL_SET_ID, i + 1);
    nftnl_set_set_u32(set, NFTNL_SET_KEY_TYPE, definition->key_type);
    nftnl_set_set_u32(set, NFTNL_SET_KEY_LEN, definition->key_length);
    nftnl_set_set_u32(set, NFTNL_SET_FLAGS, definition->flags);
    if (definition->flags & NFT_SET_CONCAT)
      nftnl_set_set_data(set, NFTNL_SET_DESC_CONCAT, definition->fields,
                         sizeof definition->fields);
    if (definition->timeout_ms != 0)
      nftnl_set_set_u64(set, NFTNL_SET_TIMEOUT, definition->timeout_ms);
    if (definition->size != 0)
      nftnl_set_set_u32(set, NFTNL_SET_DESC_SIZE, definition->size);
    if (definition->host_order) {
      struct nftnl_udata_buf *userdata = nftnl_udata_buf_alloc(64);
      nftnl_udata_put_u32(userdata, NFTNL_UDATA_SET_KEYBYTEORDER, BYTEORDER_HOST_ENDIAN);
      nftnl_set_set_data(set, NFTNL_SET_USERDATA, nftnl_udata_buf_data(userdata),
                         nftnl_udata_buf_len(userdata));
      nftnl_udata_buf_free(userdata);
    }
    tg_nft_batch_add_set(batch, NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL, set, what);
    nftnl_set_free(set);
  }
}

static void
batch_poison_if_asked(TgFirewall *firewall, TgNftBatch *batch)
{
  struct nftnl_set *set;

  if (!firewall->poison_next_batch)
    return;
  firewall->poison_next_batch = FALSE;
  set = set_reference("tg-test-poison");
  tg_nft_batch_add_set(batch, NFT_MSG_DELSET, 0, set,
                       "deleting set tg-test-poison (test)");
  nftnl_set_free(set);
}

/* The whole table from the state, replacing whatever is there, as one batch. */
static TgNftBatch *
build_full_batch(TgFirewall *firewall, guint32 table_flags)
{
  TgNftBatch *batch = tg_nft_batch_new();
  struct nftnl_table *table = table_new(table_flags != 0, table_flags);
  GHashTableIter iter;
  gpointer value;

  batch_delete_table(batch);
  tg_nft_batch_add_table(batch, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL, table,
                         table_flags != 0 ? "adding table inet " TABLE " (owner|persist)"
                                          : "adding table inet " TABLE);
  nftnl_table_free(table);

  batch_counter(batch, COUNTER_LOCKDOWN);
  batch_counter(batch, COUNTER_LISTENER);
  batch_counter(batch, COUNTER_CONNECT_BACK);
  batch_counter(batch, COUNTER_SERVER);
  batch_counter(batch, COUNTER_OWNER);
  batch_counter(batch, COUNTER_UNKNOWN);
  batch_sets(batch);
  write_server_sets(firewall, batch);
  write_ssh_ports(firewall, batch);
  write_servers(firewall, batch);
  write_uid_set(batch, "exempt_uids", firewall->exempt_uids);
  g_hash_table_iter_init(&iter, firewall->listeners);
  while (g_hash_table_iter_next(&iter, NULL, &value))
    write_listener(batch, value, NFT_MSG_NEWSETELEM);
  g_hash_table_iter_init(&iter, firewall->connect_backs);
  while (g_hash_table_iter_next(&iter, NULL, &value))
    write_connect_back(batch, value, NFT_MSG_NEWSETELEM);

  batch_chain(batch, "egress", -1);
  batch_chain(batch, "pin", -1);
  batch_chain(batch, "guard", -1);
  batch_chain(batch, "owners", -1);
  batch_chain(batch, "banner", -1);
  batch_chain(batch, "server_sftp", -1);
  batch_chain(batch, "server_jump", -1);
  batch_chain(batch, "server_unknown", -1);
  batch_chain(batch, "output", NF_INET_LOCAL_OUT);
  batch_chain(batch, "input", NF_INET_LOCAL_IN);
  if (firewall->server_mode)
    write_server_rules(firewall, batch);
  if (firewall->listener_guard)
    write_owner_rules(firewall, batch);
  write_egress_rules(firewall, batch);
  write_guard_rules(firewall, batch);
  batch_poison_if_asked(firewall, batch);
  return batch;
}

static gboolean
install_table(TgFirewall *firewall, guint32 table_flags, int *errno_out, GError **error)
{
  g_autoptr(TgNftBatch) batch = build_full_batch(firewall, table_flags);
  return tg_nft_socket_commit(firewall->socket, batch, errno_out, error);
}

/* With ownership asked for: try owner|persist, fall back when the kernel does
 * not know PERSIST (< 6.9). OWNER alone would delete the table with the daemon. */
static gboolean
install_initial(TgFirewall *firewall, GError **error)
{
  g_autoptr(GError) owner_error = NULL;
  int code = 0;

  if (firewall->ownership == TG_FIREWALL_OWNERSHIP_AUTO) {
    if (install_table(firewall, NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST, &code,
                      &owner_error)) {
      firewall->owner = TRUE;
      return TRUE;
    }
    if (code != EOPNOTSUPP && code != EINVAL) {
      g_propagate_error(error, g_steal_pointer(&owner_error));
      return FALSE;
    }
    tg_info("nftables: no table ownership on this kernel (%s); tamper repair only",
            owner_error->message);
  }
  firewall->owner = FALSE;
  return install_table(firewall, 0, NULL, error);
}

static guint32
current_table_flags(TgFirewall *firewall)
{
  return firewall->owner ? NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST : 0;
}

/* Runs a per-element batch: all of it or nothing. */
static gboolean
commit_update(TgFirewall *firewall, TgNftBatch *batch, GError **error)
{
  batch_poison_if_asked(firewall, batch);
  return tg_nft_socket_commit(firewall->socket, batch, NULL, error);
}

/* ---- public API ---- */

static gboolean
validate_config(const TgFirewallConfig *config, GError **error)
{
  for (gsize i = 0; i < config->n_ssh_ports; i++) {
    const TgPortRange *ports = &config->ssh_ports[i];
    if (ports->first == 0 || ports->first > ports->last) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "SSH port range %u-%u is not valid (1-65535, first <= last)",
                  ports->first, ports->last);
      return FALSE;
    }
  }
  for (gsize i = 0; i < config->n_ssh_servers; i++)
    if (!validate_address(&config->ssh_servers[i], FALSE, "SSH server", error))
      return FALSE;
  if (config->log_prefix != NULL && strlen(config->log_prefix) > MAX_LOG_PREFIX) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "Log prefix is longer than %d bytes", MAX_LOG_PREFIX);
    return FALSE;
  }
  return TRUE;
}

static GArray *
copy_array(const void *data, gsize n, guint element_size)
{
  GArray *array = g_array_sized_new(FALSE, TRUE, element_size, (guint)n);
  if (n > 0)
    g_array_append_vals(array, data, (guint)n);
  return array;
}

static gboolean
validate_servers(const TgFirewallAddress *servers, gsize n, GError **error)
{
  for (gsize i = 0; i < n; i++)
    if (!validate_address(&servers[i], FALSE, "SSH server", error))
      return FALSE;
  return TRUE;
}

TgFirewall *
tg_firewall_new(const TgFirewallConfig *config, GError **error)
{
  g_autoptr(TgFirewall) firewall = NULL;

  if (!validate_config(config, error))
    return NULL;
  firewall = g_new0(TgFirewall, 1);
  firewall->daemon_mark =
      config->daemon_mark != 0 ? config->daemon_mark : TG_FIREWALL_DAEMON_MARK;
  firewall->connect_back_mark = config->connect_back_mark != 0
                                    ? config->connect_back_mark
                                    : TG_FIREWALL_CONNECT_BACK_MARK;
  firewall->egress_lockdown = config->egress_lockdown;
  firewall->detect_ssh_banner = config->egress_lockdown && config->detect_ssh_banner;
  firewall->listener_guard = config->listener_guard;
  firewall->connect_back_pinning = config->connect_back_pinning;
  firewall->log_prefix = g_strdup(config->log_prefix);
  firewall->ownership = config->ownership;
  firewall->ssh_ports =
      copy_array(config->ssh_ports, config->n_ssh_ports, sizeof(TgPortRange));
  firewall->servers =
      copy_array(config->ssh_servers, config->n_ssh_servers, sizeof(TgFirewallAddress));
  firewall->exempt_uids =
      copy_array(config->exempt_uids, config->n_exempt_uids, sizeof(guint32));
  firewall->server_mode = config->server_mode;
  firewall->sftp_only_uids =
      copy_array(config->sftp_only_uids, config->n_sftp_only_uids, sizeof(guint32));
  firewall->jump_uids =
      copy_array(config->jump_uids, config->n_jump_uids, sizeof(guint32));
  firewall->jump_rules =
      copy_array(config->jump_rules, config->n_jump_rules, sizeof(TgFirewallJumpRule));
  firewall->known_uids =
      copy_array(config->known_uids, config->n_known_uids, sizeof(guint32));
  firewall->listeners =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, listener_free);
  firewall->connect_backs =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, connect_back_free);
  firewall->tamper_notes = g_string_new(NULL);
  if (firewall->daemon_mark == firewall->connect_back_mark) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "The daemon mark and the connect-back mark must differ (0x%x)",
                firewall->daemon_mark);
    return NULL;
  }

  firewall->socket = tg_nft_socket_open(error);
  if (firewall->socket == NULL || !install_initial(firewall, error))
    return NULL;
  return g_steal_pointer(&firewall);
}

void
tg_firewall_free(TgFirewall *firewall)
{
  if (firewall == NULL)
    return;
  if (firewall->repair_source != NULL) {
    g_source_destroy(firewall->repair_source);
    g_source_unref(firewall->repair_source);
  }
  if (firewall->events_source != NULL) {
    g_source_destroy(firewall->events_source);
    g_source_unref(firewall->events_source);
  }
  if (firewall->log_source != NULL) {
    g_source_destroy(firewall->log_source);
    g_source_unref(firewall->log_source);
  }
  if (firewall->context != NULL)
    g_main_context_unref(firewall->context);
  tg_nft_socket_close(firewall->log);
  tg_nft_socket_close(firewall->events);
  tg_nft_socket_close(firewall->socket); /* as owner: the table stays (persist) */
  g_clear_pointer(&firewall->listeners, g_hash_table_unref);
  g_clear_pointer(&firewall->connect_backs, g_hash_table_unref);
  g_clear_pointer(&firewall->ssh_ports, g_array_unref);
  g_clear_pointer(&firewall->servers, g_array_unref);
  g_clear_pointer(&firewall->exempt_uids, g_array_unref);
  g_clear_pointer(&firewall->sftp_only_uids, g_array_unref);
  g_clear_pointer(&firewall->jump_uids, g_array_unref);
  g_clear_pointer(&firewall->jump_rules, g_array_unref);
  g_clear_pointer(&firewall->known_uids, g_array_unref);
  if (firewall->tamper_notes != NULL)
    g_string_free(firewall->tamper_notes, TRUE);
  g_free(firewall->last_note);
  g_free(firewall->tamper_who);
  g_free(firewall->log_error);
  g_free(firewall->log_prefix);
  g_free(firewall);
}

gboolean
tg_firewall_is_owner(const TgFirewall *firewall)
{
  return firewall->owner;
}

static gboolean
is_any_address(const TgFirewallAddress *address)
{
  static const guint8 zero[16];

  return memcmp(address->bytes, zero, address_length(address->family)) == 0;
}

static gboolean
validate_sources(int family, const TgFirewallAddress *addresses, gsize n, GError **error)
{
  for (gsize i = 0; i < n; i++) {
    if (!validate_address(&addresses[i], TRUE, "Allowed source", error))
      return FALSE;
    if (addresses[i].family != family) {
      g_set_error_literal(
          error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
          "Allowed source is of another address family than the listener");
      return FALSE;
    }
  }
  return TRUE;
}

/* The listener's address, or NULL for every address of its family. */
static const TgFirewallAddress *
bound_address(const TgFirewallAddress *address)
{
  return address != NULL && !is_any_address(address) ? address : NULL;
}

gboolean
tg_firewall_add_listener(TgFirewall *firewall, const TgFirewallListener *spec,
                         GError **error)
{
  const TgFirewallAddress *address = NULL;
  g_autofree char *key = NULL;
  g_autoptr(TgNftBatch) batch = NULL;
  Listener *listener;

  if (spec->family != AF_INET && spec->family != AF_INET6) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "Listener family %d is neither IPv4 nor IPv6", spec->family);
    return FALSE;
  }
  if (spec->port == 0) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                        "Listener port 0 is not a port");
    return FALSE;
  }
  if (spec->address != NULL) {
    if (!validate_address(spec->address, TRUE, "Listener address", error))
      return FALSE;
    if (spec->address->family != spec->family) {
      g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                          "Listener address is of another family than the listener");
      return FALSE;
    }
    address = bound_address(spec->address);
  }
  if (!validate_sources(spec->family, spec->sources, spec->n_sources, error))
    return FALSE;
  key = listener_key(spec->family, address, spec->port);
  if (g_hash_table_contains(firewall->listeners, key)) {
    g_autofree char *text = address != NULL ? address_to_string(address, FALSE) : NULL;

    g_set_error(error, TG_ERROR, TG_ERROR_ADDRESS_IN_USE,
                "A listener on %s port %u is already guarded",
                text != NULL              ? text
                : spec->family == AF_INET ? "0.0.0.0"
                                          : "::",
                spec->port);
    return FALSE;
  }

  listener = g_new0(Listener, 1);
  listener->family = spec->family;
  listener->port = spec->port;
  listener->has_address = address != NULL;
  if (address != NULL)
    listener->address = *address;
  listener->guard_remote = spec->guard_remote;
  listener->sources =
      copy_array(spec->guard_remote ? spec->sources : NULL,
                 spec->guard_remote ? spec->n_sources : 0, sizeof(TgFirewallAddress));
  listener->guard_local = spec->guard_local;
  listener->uids = copy_array(spec->guard_local ? spec->uids : NULL,
                              spec->guard_local ? spec->n_uids : 0, sizeof(guint32));
  listener->tunnel_id = g_strdup(spec->tunnel_id);

  batch = tg_nft_batch_new();
  write_listener(batch, listener, NFT_MSG_NEWSETELEM);
  if (!commit_update(firewall, batch, error)) {
    listener_free(listener);
    return FALSE;
  }
  g_hash_table_insert(firewall->listeners, g_steal_pointer(&key), listener);
  return TRUE;
}

gboolean
tg_firewall_remove_listener(TgFirewall *firewall, int family,
                            const TgFirewallAddress *address, guint16 port,
                            GError **error)
{
  g_autofree char *key = listener_key(family, bound_address(address), port);
  g_autoptr(TgNftBatch) batch = NULL;
  Listener *listener = g_hash_table_lookup(firewall->listeners, key);

  if (listener == NULL) {
    g_set_error(error, TG_ERROR, TG_ERROR_NOT_FOUND, "No guarded listener on port %u",
                port);
    return FALSE;
  }
  batch = tg_nft_batch_new();
  write_listener(batch, listener, NFT_MSG_DELSETELEM);
  if (!commit_update(firewall, batch, error))
    return FALSE;
  g_hash_table_remove(firewall->listeners, key);
  return TRUE;
}

gboolean
tg_firewall_add_connect_back(TgFirewall *firewall, const TgFirewallAddress *address,
                             guint16 port, const char *tunnel_id, GError **error)
{
  g_autofree char *key = NULL;
  g_autoptr(TgNftBatch) batch = NULL;
  ConnectBack *connect_back;

  if (!validate_address(address, TRUE, "Connect-back destination", error))
    return FALSE;
  if (port == 0) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                        "Connect-back port 0 is not a port");
    return FALSE;
  }
  key = connect_back_key(address, port);
  if (g_hash_table_contains(firewall->connect_backs, key))
    return TRUE; /* several forwards may share a destination */

  connect_back = g_new0(ConnectBack, 1);
  connect_back->address = *address;
  connect_back->port = port;
  connect_back->tunnel_id = g_strdup(tunnel_id);
  batch = tg_nft_batch_new();
  write_connect_back(batch, connect_back, NFT_MSG_NEWSETELEM);
  if (!commit_update(firewall, batch, error)) {
    connect_back_free(connect_back);
    return FALSE;
  }
  g_hash_table_insert(firewall->connect_backs, g_steal_pointer(&key), connect_back);
  return TRUE;
}

gboolean
tg_firewall_remove_connect_back(TgFirewall *firewall, const TgFirewallAddress *address,
                                guint16 port, GError **error)
{
  g_autofree char *key = connect_back_key(address, port);
  g_autoptr(TgNftBatch) batch = NULL;
  ConnectBack *connect_back = g_hash_table_lookup(firewall->connect_backs, key);

  if (connect_back == NULL) {
    g_set_error(error, TG_ERROR, TG_ERROR_NOT_FOUND, "No connect-back destination %s",
                key);
    return FALSE;
  }
  batch = tg_nft_batch_new();
  write_connect_back(batch, connect_back, NFT_MSG_DELSETELEM);
  if (!commit_update(firewall, batch, error))
    return FALSE;
  g_hash_table_remove(firewall->connect_backs, key);
  return TRUE;
}

gboolean
tg_firewall_set_exempt_uids(TgFirewall *firewall, const guint32 *uids, gsize n_uids,
                            GError **error)
{
  g_autoptr(GArray) old = firewall->exempt_uids;
  g_autoptr(TgNftBatch) batch = tg_nft_batch_new();

  firewall->exempt_uids = copy_array(uids, n_uids, sizeof(guint32));
  batch_flush_set(batch, "exempt_uids");
  write_uid_set(batch, "exempt_uids", firewall->exempt_uids);
  if (!commit_update(firewall, batch, error)) {
    g_array_unref(firewall->exempt_uids);
    firewall->exempt_uids = g_steal_pointer(&old);
    return FALSE;
  }
  return TRUE;
}

static gboolean
validate_jump_rules(const TgFirewallJumpRule *rules, gsize n_rules, GError **error)
{
  for (gsize i = 0; i < n_rules; i++) {
    if (!validate_address(&rules[i].network, FALSE, "Jump-host destination", error))
      return FALSE;
    if (rules[i].first_port == 0 || rules[i].first_port > rules[i].last_port) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "Jump-host port range %u-%u is not a range of ports",
                  rules[i].first_port, rules[i].last_port);
      return FALSE;
    }
  }
  return TRUE;
}

gboolean
tg_firewall_set_server_users(TgFirewall *firewall, const TgFirewallServerUsers *users,
                             GError **error)
{
  GArray *old[4] = { firewall->sftp_only_uids, firewall->jump_uids, firewall->jump_rules,
                     firewall->known_uids };
  g_autoptr(TgNftBatch) batch = tg_nft_batch_new();

  if (!validate_jump_rules(users->jump_rules, users->n_jump_rules, error))
    return FALSE;
  firewall->sftp_only_uids =
      copy_array(users->sftp_only_uids, users->n_sftp_only_uids, sizeof(guint32));
  firewall->jump_uids = copy_array(users->jump_uids, users->n_jump_uids, sizeof(guint32));
  firewall->jump_rules =
      copy_array(users->jump_rules, users->n_jump_rules, sizeof(TgFirewallJumpRule));
  firewall->known_uids =
      copy_array(users->known_uids, users->n_known_uids, sizeof(guint32));
  batch_flush_set(batch, "sftp_only_uids");
  batch_flush_set(batch, "jump_uids");
  batch_flush_set(batch, "jump_allow_v4");
  batch_flush_set(batch, "jump_allow_v6");
  batch_flush_set(batch, "server_known_uids");
  write_server_sets(firewall, batch);
  if (!commit_update(firewall, batch, error)) {
    g_array_unref(firewall->sftp_only_uids);
    g_array_unref(firewall->jump_uids);
    g_array_unref(firewall->jump_rules);
    g_array_unref(firewall->known_uids);
    firewall->sftp_only_uids = old[0];
    firewall->jump_uids = old[1];
    firewall->jump_rules = old[2];
    firewall->known_uids = old[3];
    return FALSE;
  }
  for (guint i = 0; i < G_N_ELEMENTS(old); i++)
    g_array_unref(old[i]);
  return TRUE;
}

gboolean
tg_firewall_add_server_users(TgFirewall *firewall, const TgFirewallServerUsers *users,
                             GError **error)
{
  g_autoptr(TgNftBatch) batch = tg_nft_batch_new();
  g_autoptr(GArray) sftp_only =
      copy_array(users->sftp_only_uids, users->n_sftp_only_uids, sizeof(guint32));
  g_autoptr(GArray) jump = copy_array(users->jump_uids, users->n_jump_uids, sizeof(guint32));
  g_autoptr(GArray) rules =
      copy_array(users->jump_rules, users->n_jump_rules, sizeof(TgFirewallJumpRule));
  g_autoptr(GArray) known =
      copy_array(users->known_uids, users->n_known_uids, sizeof(guint32));

  if (!validate_jump_rules(users->jump_rules, users->n_jump_rules, error))
    return FALSE;
  /* the restrictions first: a uid is known only with them in place */
  write_uid_set(batch, "sftp_only_uids", sftp_only);
  write_uid_set(batch, "jump_uids", jump);
  write_jump_rules(batch, rules);
  write_uid_set(batch, "server_known_uids", known);
  if (!commit_update(firewall, batch, error))
    return FALSE;
  g_array_append_vals(firewall->sftp_only_uids, sftp_only->data, sftp_only->len);
  g_array_append_vals(firewall->jump_uids, jump->data, jump->len);
  g_array_append_vals(firewall->jump_rules, rules->data, rules->len);
  g_array_append_vals(firewall->known_uids, known->data, known->len);
  return TRUE;
}

static void
on_unknown_element(const struct nlmsghdr *message, gpointer user_data)
{
  GArray *uids = user_data;
  struct nftnl_set *set = nftnl_set_alloc();
  struct nftnl_set_elems_iter *iter;
  struct nftnl_set_elem *element;

  if (nftnl_set_elems_nlmsg_parse(message, set) == 0 &&
      (iter = nftnl_set_elems_iter_create(set)) != NULL) {
    while ((element = nftnl_set_elems_iter_next(iter)) != NULL) {
      guint32 length = 0;
      const void *key = nftnl_set_elem_get(element, NFTNL_SET_ELEM_KEY, &length);
      guint32 uid;

      if (key == NULL || length != sizeof uid)
        continue;
      memcpy(&uid, key, sizeof uid);
      g_array_append_val(uids, uid);
    }
    nftnl_set_elems_iter_destroy(iter);
  }
  nftnl_set_free(set);
}

GArray *
tg_firewall_read_unknown_uids(TgFirewall *firewall, GError **error)
{
  g_autoptr(GArray) uids = g_array_new(FALSE, FALSE, sizeof(guint32));

  if (!firewall->server_mode)
    return g_steal_pointer(&uids);
  if (!tg_nft_socket_dump_elements(firewall->socket, NFPROTO_INET, TABLE,
                                   "server_unknown_uids", on_unknown_element, uids, error))
    return NULL;
  return g_steal_pointer(&uids);
}

gboolean
tg_firewall_update_servers(TgFirewall *firewall, const TgFirewallAddress *servers,
                           gsize n_servers, GError **error)
{
  g_autoptr(GArray) old = NULL;
  g_autoptr(TgNftBatch) batch = NULL;

  if (!validate_servers(servers, n_servers, error))
    return FALSE;
  old = firewall->servers;
  firewall->servers = copy_array(servers, n_servers, sizeof(TgFirewallAddress));
  batch = tg_nft_batch_new();
  batch_flush_set(batch, "ssh_servers_v4");
  batch_flush_set(batch, "ssh_servers_v6");
  write_servers(firewall, batch);
  if (!commit_update(firewall, batch, error)) {
    g_array_unref(firewall->servers);
    firewall->servers = g_steal_pointer(&old);
    return FALSE;
  }
  return TRUE;
}

/* ---- tamper repair ---- */

static void
note_tamper(TgFirewall *firewall, const char *note)
{
  firewall->tampered = TRUE;
  if (g_strcmp0(note, firewall->last_note) == 0)
    return; /* a whole chain's rules: one note */
  g_free(firewall->last_note);
  firewall->last_note = g_strdup(note);
  if (firewall->n_tamper_notes++ < MAX_TAMPER_NOTES)
    g_string_append_printf(firewall->tamper_notes, "%s%s",
                           firewall->tamper_notes->len > 0 ? ", " : "", note);
}

static gboolean repair_now(gpointer user_data);

static void
schedule_repair(TgFirewall *firewall, guint delay_ms)
{
  if (firewall->repair_source != NULL)
    return;
  firewall->repair_source = g_timeout_source_new(delay_ms);
  g_source_set_callback(firewall->repair_source, repair_now, firewall, NULL);
  g_source_attach(firewall->repair_source, firewall->context);
}

static gboolean
repair_now(gpointer user_data)
{
  TgFirewall *firewall = user_data;
  g_autoptr(GError) error = NULL;
  g_autofree char *notes = NULL;
  g_autofree char *who = g_steal_pointer(&firewall->tamper_who);

  g_source_unref(firewall->repair_source);
  firewall->repair_source = NULL;
  if (firewall->n_tamper_notes > MAX_TAMPER_NOTES)
    g_string_append_printf(firewall->tamper_notes, " and %u more changes",
                           firewall->n_tamper_notes - MAX_TAMPER_NOTES);
  notes = g_string_free(g_steal_pointer(&firewall->tamper_notes), FALSE);
  firewall->tamper_notes = g_string_new(NULL);
  firewall->n_tamper_notes = 0;
  firewall->tampered = FALSE;
  g_clear_pointer(&firewall->last_note, g_free);

  if (!install_table(firewall, current_table_flags(firewall), NULL, &error)) {
    tg_log_event(G_LOG_LEVEL_WARNING, "FIREWALL_REPAIR_FAILED", "MESSAGE",
                 "Firewall table inet " TABLE " was changed by %s (%s) and "
                 "could not be restored: %s; retrying",
                 who != NULL ? who : "someone else", notes, error->message);
    note_tamper(firewall, "retry after a failed repair");
    schedule_repair(firewall, REPAIR_RETRY_MS);
    return G_SOURCE_REMOVE;
  }
  firewall->repairs++;
  tg_log_event(G_LOG_LEVEL_WARNING, "FIREWALL_REPAIRED", "MESSAGE",
               "Firewall table inet " TABLE " was changed by %s (%s); restored",
               who != NULL ? who : "someone else", notes);
  return G_SOURCE_REMOVE;
}

static void
on_event(const TgNftEvent *event, gpointer user_data)
{
  TgFirewall *firewall = user_data;
  g_autofree char *note = NULL;

  if (event->msg_type == NFT_MSG_NEWGEN) {
    if (firewall->tamper_in_commit) {
      g_free(firewall->tamper_who);
      firewall->tamper_who = g_strdup_printf(
          "%s[%u]", event->gen_name[0] ? event->gen_name : "?", event->gen_pid);
      firewall->tamper_in_commit = FALSE;
    }
    return;
  }
  if (event->family != NFPROTO_INET || strcmp(event->table, TABLE) != 0 ||
      event->portid == tg_nft_socket_get_portid(firewall->socket))
    return;
  note = g_strdup_printf("%s %s (netlink port %u)", tg_nft_msg_type_name(event->msg_type),
                         event->object[0] ? event->object : TABLE, event->portid);
  note_tamper(firewall, note);
  firewall->tamper_in_commit = TRUE;
}

static gboolean
on_events_readable(int fd, GIOCondition condition, gpointer user_data)
{
  TgFirewall *firewall = user_data;

  if (!tg_nft_events_read(firewall->events, on_event, firewall))
    note_tamper(firewall, "nftables events were lost");
  if (firewall->tampered)
    schedule_repair(firewall, REPAIR_DELAY_MS);
  return G_SOURCE_CONTINUE;
}

void
tg_firewall_set_unknown_handler(TgFirewall *firewall, TgFirewallUnknownFunc func,
                                gpointer user_data)
{
  firewall->unknown_func = func;
  firewall->unknown_data = user_data;
}

const char *
tg_firewall_get_log_error(const TgFirewall *firewall)
{
  return firewall->log_error;
}

void
tg_firewall_set_refusal_handler(TgFirewall *firewall, TgFirewallRefusalFunc func,
                                gpointer user_data)
{
  firewall->refusal_func = func;
  firewall->refusal_data = user_data;
}

/* The addresses and ports of a logged packet (IPv4 or IPv6, then TCP). */
static gboolean
parse_logged_packet(const TgNflogPacket *packet, TgFirewallRefusal *refusal)
{
  const guint8 *p = packet->payload;
  gsize header_length;
  guint16 ports[2];

  memset(refusal, 0, sizeof *refusal);
  if (packet->family == NFPROTO_IPV4 && packet->length >= 20 && (p[0] >> 4) == 4) {
    header_length = (gsize)(p[0] & 0x0f) * 4;
    refusal->family = AF_INET;
    memcpy(refusal->source.bytes, p + 12, 4);
    memcpy(refusal->destination.bytes, p + 16, 4);
  } else if (packet->family == NFPROTO_IPV6 && packet->length >= 40 && (p[0] >> 4) == 6 &&
             p[6] == IPPROTO_TCP) {
    header_length = 40;
    refusal->family = AF_INET6;
    memcpy(refusal->source.bytes, p + 8, 16);
    memcpy(refusal->destination.bytes, p + 24, 16);
  } else {
    return FALSE;
  }
  if (header_length < 20 || packet->length < header_length + 4)
    return FALSE;
  memcpy(ports, p + header_length, sizeof ports);
  refusal->source.family = refusal->destination.family = refusal->family;
  refusal->source.prefix = refusal->destination.prefix =
      address_length(refusal->family) * 8;
  refusal->source_port = ntohs(ports[0]);
  refusal->destination_port = ntohs(ports[1]);
  refusal->has_uid = packet->has_uid;
  refusal->uid = packet->uid;
  return TRUE;
}

static void
on_logged_packet(const TgNflogPacket *packet, gpointer user_data)
{
  TgFirewall *firewall = user_data;
  TgFirewallRefusal refusal;
  g_autofree char *key = NULL;
  const Listener *listener;

  if (packet->prefix != NULL && strcmp(packet->prefix, UNKNOWN_LOG_PREFIX) == 0) {
    firewall->unknown_seen = TRUE;
    return;
  }
  if (packet->prefix == NULL || strcmp(packet->prefix, OWNER_LOG_PREFIX) != 0 ||
      !parse_logged_packet(packet, &refusal))
    return;
  key = listener_key(refusal.family, &refusal.destination, refusal.destination_port);
  listener = g_hash_table_lookup(firewall->listeners, key);
  if (listener == NULL) {
    g_free(key);
    key = listener_key(refusal.family, NULL, refusal.destination_port);
    listener = g_hash_table_lookup(firewall->listeners, key);
  }
  refusal.tunnel_id = listener != NULL ? listener->tunnel_id : NULL;
  if (firewall->refusal_func != NULL)
    firewall->refusal_func(&refusal, firewall->refusal_data);
}

static gboolean
on_log_readable(int fd, GIOCondition condition, gpointer user_data)
{
  TgFirewall *firewall = user_data;

  gboolean complete;

  firewall->unknown_seen = FALSE;
  complete = tg_nflog_read(firewall->log, on_logged_packet, firewall);
  if (!complete && firewall->listener_guard)
    tg_warning("firewall: some refused local connections were not reported (the "
               "kernel's nflog queue was full)");
  /* a lost message may have been about an unknown uid */
  if ((firewall->unknown_seen || (!complete && firewall->server_mode)) &&
      firewall->unknown_func != NULL)
    firewall->unknown_func(firewall->unknown_data);
  return G_SOURCE_CONTINUE;
}

gboolean
tg_firewall_watch(TgFirewall *firewall, GMainContext *context, GError **error)
{
  g_return_val_if_fail(firewall->events == NULL, FALSE);

  firewall->events = tg_nft_events_open(error);
  if (firewall->events == NULL)
    return FALSE;
  firewall->context =
      g_main_context_ref(context != NULL ? context : g_main_context_default());
  firewall->events_source =
      g_unix_fd_source_new(tg_nft_socket_get_fd(firewall->events), G_IO_IN);
  g_source_set_callback(firewall->events_source, G_SOURCE_FUNC(on_events_readable),
                        firewall, NULL);
  g_source_attach(firewall->events_source, firewall->context);

  if (firewall->listener_guard || firewall->server_mode) {
    g_autoptr(GError) log_error = NULL;

    firewall->log = tg_nflog_open(TG_FIREWALL_LOG_GROUP, &log_error);
    if (firewall->log == NULL) {
      firewall->log_error = g_strdup(log_error->message);
      if (firewall->listener_guard)
        tg_warning("firewall: refused local connections will be counted but not named: "
                   "%s",
                   log_error->message);
      if (firewall->server_mode)
        tg_warning("firewall: the daemon is not told of uids it has not placed, whose "
                   "packets stay dropped: %s",
                   log_error->message);
    } else {
      firewall->log_source =
          g_unix_fd_source_new(tg_nft_socket_get_fd(firewall->log), G_IO_IN);
      g_source_set_callback(firewall->log_source, G_SOURCE_FUNC(on_log_readable),
                            firewall, NULL);
      g_source_attach(firewall->log_source, firewall->context);
    }
  }
  return TRUE;
}

guint
tg_firewall_get_repair_count(const TgFirewall *firewall)
{
  return firewall->repairs;
}

/* ---- reading back ---- */

static void
on_counter(const struct nlmsghdr *message, gpointer user_data)
{
  TgFirewallCounters *counters = user_data;
  struct nftnl_obj *obj = nftnl_obj_alloc();

  if (nftnl_obj_nlmsg_parse(message, obj) == 0 &&
      nftnl_obj_get_u32(obj, NFTNL_OBJ_TYPE) == NFT_OBJECT_COUNTER) {
    const char *name = nftnl_obj_get_str(obj, NFTNL_OBJ_NAME);
    guint64 packets = nftnl_obj_get_u64(obj, NFTNL_OBJ_CTR_PKTS);

    if (g_strcmp0(name, COUNTER_LOCKDOWN) == 0)
      counters->lockdown_packets = packets;
    else if (g_strcmp0(name, COUNTER_LISTENER) == 0)
      counters->listener_packets = packets;
    else if (g_strcmp0(name, COUNTER_CONNECT_BACK) == 0)
      counters->connect_back_packets = packets;
    else if (g_strcmp0(name, COUNTER_SERVER) == 0)
      counters->server_packets = packets;
    else if (g_strcmp0(name, COUNTER_OWNER) == 0)
      counters->owner_packets = packets;
    else if (g_strcmp0(name, COUNTER_UNKNOWN) == 0)
      counters->unknown_packets = packets;
  }
  nftnl_obj_free(obj);
}

gboolean
tg_firewall_read_counters(TgFirewall *firewall, TgFirewallCounters *counters,
                          GError **error)
{
  memset(counters, 0, sizeof *counters);
  return tg_nft_socket_dump(firewall->socket, NFT_MSG_GETOBJ, NFPROTO_INET, TABLE,
                            on_counter, counters, error);
}

char *
tg_firewall_describe(TgFirewall *firewall)
{
  GString *out = g_string_new(NULL);
  TgFirewallCounters counters;
  g_autoptr(GError) error = NULL;
  GHashTableIter iter;
  gpointer value;

  g_string_append_printf(out, "table inet " TABLE ": owner %s, repairs %u\n",
                         firewall->owner ? "yes (owner|persist)" : "no",
                         firewall->repairs);
  g_string_append_printf(
      out,
      "egress lockdown %s, ssh banner detection %s, listener guard %s, "
      "connect-back pinning %s, daemon mark 0x%08x, connect-back mark 0x%08x\n",
      firewall->egress_lockdown ? "on" : "off",
      firewall->detect_ssh_banner ? "on" : "off", firewall->listener_guard ? "on" : "off",
      firewall->connect_back_pinning ? "on" : "off", firewall->daemon_mark,
      firewall->connect_back_mark);
  g_string_append(out, "ssh ports:");
  for (guint i = 0; i < firewall->ssh_ports->len; i++) {
    g_string_append_c(out, ' ');
    tg_port_range_append(out, &g_array_index(firewall->ssh_ports, TgPortRange, i));
  }
  g_string_append(out, "\nssh servers:");
  for (guint i = 0; i < firewall->servers->len; i++) {
    g_autofree char *text =
        address_to_string(&g_array_index(firewall->servers, TgFirewallAddress, i), TRUE);
    g_string_append_printf(out, " %s", text);
  }
  g_string_append(out, "\nexempt uids:");
  for (guint i = 0; i < firewall->exempt_uids->len; i++)
    g_string_append_printf(out, " %u", g_array_index(firewall->exempt_uids, guint32, i));
  g_string_append_c(out, '\n');
  if (firewall->server_mode) {
    g_string_append(out, "server mode: sftp-only uids:");
    for (guint i = 0; i < firewall->sftp_only_uids->len; i++)
      g_string_append_printf(out, " %u",
                             g_array_index(firewall->sftp_only_uids, guint32, i));
    g_string_append_printf(out, "\nserver mode: %u uids placed (the packets of others "
                                "wait for the daemon to place them)\n",
                           firewall->known_uids->len + 1);
    for (guint i = 0; i < firewall->jump_rules->len; i++) {
      const TgFirewallJumpRule *rule =
          &g_array_index(firewall->jump_rules, TgFirewallJumpRule, i);
      g_autofree char *text = address_to_string(&rule->network, TRUE);

      g_string_append_printf(out, "jump host: uid %u may reach %s port %u-%u\n",
                             rule->uid, text, rule->first_port, rule->last_port);
    }
    for (guint i = 0; i < firewall->jump_uids->len; i++) {
      guint32 uid = g_array_index(firewall->jump_uids, guint32, i);
      gboolean any = FALSE;

      for (guint j = 0; j < firewall->jump_rules->len && !any; j++)
        any = g_array_index(firewall->jump_rules, TgFirewallJumpRule, j).uid == uid;
      if (!any)
        g_string_append_printf(out, "jump host: uid %u may reach nothing\n", uid);
    }
  }

  g_hash_table_iter_init(&iter, firewall->listeners);
  while (g_hash_table_iter_next(&iter, NULL, &value)) {
    const Listener *listener = value;
    g_autofree char *bound =
        listener->has_address ? address_to_string(&listener->address, FALSE) : NULL;

    g_string_append_printf(out, "listener %s%s%s port %u (tunnel %s): other hosts ",
                           listener->family == AF_INET6 ? "[" : "",
                           bound != NULL                 ? bound
                           : listener->family == AF_INET ? "0.0.0.0"
                                                         : "::",
                           listener->family == AF_INET6 ? "]" : "", listener->port,
                           listener->tunnel_id != NULL ? listener->tunnel_id : "-");
    if (!listener->guard_remote)
      g_string_append(out, listener->has_address ? "not guarded" : "any");
    else if (listener->sources->len == 0)
      g_string_append(out, "none");
    for (guint i = 0; listener->guard_remote && i < listener->sources->len; i++) {
      g_autofree char *text = address_to_string(
          &g_array_index(listener->sources, TgFirewallAddress, i), FALSE);
      g_string_append_printf(out, "%s%s", i > 0 ? ", " : "", text);
    }
    g_string_append(out, "; local users ");
    if (!listener->guard_local)
      g_string_append(out, "any");
    else
      g_string_append(out, "root");
    for (guint i = 0; listener->guard_local && i < listener->uids->len; i++)
      g_string_append_printf(out, ", uid %u", g_array_index(listener->uids, guint32, i));
    g_string_append_c(out, '\n');
  }
  g_hash_table_iter_init(&iter, firewall->connect_backs);
  while (g_hash_table_iter_next(&iter, NULL, &value)) {
    const ConnectBack *connect_back = value;
    g_autofree char *text = address_to_string(&connect_back->address, FALSE);

    g_string_append_printf(
        out, "connect-back %s%s%s port %u (tunnel %s)\n",
        connect_back->address.family == AF_INET6 ? "[" : "", text,
        connect_back->address.family == AF_INET6 ? "]" : "", connect_back->port,
        connect_back->tunnel_id != NULL ? connect_back->tunnel_id : "-");
  }
  if (tg_firewall_read_counters(firewall, &counters, &error))
    g_string_append_printf(
        out,
        "rejected: lockdown %" G_GUINT64_FORMAT ", listener %" G_GUINT64_FORMAT
        ", listener user %" G_GUINT64_FORMAT ", connect-back %" G_GUINT64_FORMAT
        ", server %" G_GUINT64_FORMAT ", unknown uid %" G_GUINT64_FORMAT "\n",
        counters.lockdown_packets, counters.listener_packets, counters.owner_packets,
        counters.connect_back_packets, counters.server_packets, counters.unknown_packets);
  else
    g_string_append_printf(out, "counters unavailable: %s\n", error->message);
  return g_string_free(out, FALSE);
}

gboolean
tg_firewall_remove_table(GError **error)
{
  g_autoptr(TgNftSocket) socket = tg_nft_socket_open(error);
  g_autoptr(TgNftBatch) batch = NULL;

  if (socket == NULL)
    return FALSE;
  batch = tg_nft_batch_new();
  batch_delete_table(batch);
  return tg_nft_socket_commit(socket, batch, NULL, error);
}

void
tg_firewall_test_poison_next_batch(TgFirewall *firewall)
{
  firewall->poison_next_batch = TRUE;
}
