/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "netwatch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gio/gunixfdlist.h>
#include <glib-unix.h>
#include <linux/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "text.h"
#include "tg-error.h"

#define LOGIND_NAME "org.freedesktop.login1"
#define LOGIND_PATH "/org/freedesktop/login1"
#define LOGIND_MANAGER "org.freedesktop.login1.Manager"

#define NETLINK_GROUPS                                                                   \
  (RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR |     \
   RTMGRP_LINK)
#define RECEIVE_BUFFER (64 * 1024)  /* one datagram */
#define RECEIVE_QUEUE (1024 * 1024) /* the socket's queue, against overruns */
#define DUMP_TIMEOUT_SECONDS 2

/* flags that change whether an address can be used */
#define ADDRESS_STATE_FLAGS (IFA_F_TENTATIVE | IFA_F_DADFAILED | IFA_F_DEPRECATED)

/* ---- what the kernel said so far ---- */

typedef struct {
  char *name; /* printable */
  gboolean up;
} Link;

struct _TgNetwatchState {
  GHashTable *links;     /* ifindex -> Link* */
  GHashTable *addresses; /* "ifindex address/prefix" -> its flags */
};

static void
link_free(gpointer data)
{
  Link *link = data;

  g_free(link->name);
  g_free(link);
}

TgNetwatchState *
tg_netwatch_state_new(void)
{
  TgNetwatchState *state = g_new0(TgNetwatchState, 1);

  state->links = g_hash_table_new_full(NULL, NULL, NULL, link_free);
  state->addresses = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  return state;
}

void
tg_netwatch_state_free(TgNetwatchState *state)
{
  if (state == NULL)
    return;
  g_hash_table_unref(state->links);
  g_hash_table_unref(state->addresses);
  g_free(state);
}

static void
state_clear(TgNetwatchState *state)
{
  g_hash_table_remove_all(state->links);
  g_hash_table_remove_all(state->addresses);
}

/* The name of link @index for a message: its name when known. */
static char *
link_label(TgNetwatchState *state, guint32 index)
{
  Link *link = g_hash_table_lookup(state->links, GUINT_TO_POINTER(index));

  return link != NULL ? g_strdup(link->name) : g_strdup_printf("ifindex %u", index);
}

/* ---- attributes ---- */

/* Sorts the attributes in @length bytes at @attribute by type into @table
 * (types above @max are left out). FALSE when they do not add up. */
static gboolean
parse_attributes(const struct rtattr *attribute, int length, const struct rtattr **table,
                 guint16 max)
{
  for (; RTA_OK(attribute, length); attribute = RTA_NEXT(attribute, length)) {
    guint16 type = attribute->rta_type & NLA_TYPE_MASK;

    if (type <= max)
      table[type] = attribute;
  }
  /* what is left is less than a header (the last one's padding) */
  return length < (int)sizeof(struct rtattr);
}

static gboolean
attribute_u32(const struct rtattr *attribute, guint32 *value)
{
  if (RTA_PAYLOAD(attribute) != sizeof *value)
    return FALSE;
  memcpy(value, RTA_DATA(attribute), sizeof *value);
  return TRUE;
}

static gsize
address_size(guint8 family)
{
  return family == AF_INET6 ? 16 : 4;
}

/* An address of @family as text into @text (INET6_ADDRSTRLEN bytes). */
static gboolean
attribute_address(const struct rtattr *attribute, guint8 family, char *text)
{
  if (RTA_PAYLOAD(attribute) != address_size(family))
    return FALSE;
  return inet_ntop(family, RTA_DATA(attribute), text, INET6_ADDRSTRLEN) != NULL;
}

/* A link name: NUL-terminated inside the attribute, at most IFNAMSIZ bytes. */
static char *
attribute_name(const struct rtattr *attribute)
{
  const char *data = RTA_DATA(attribute);
  gsize size = MIN(RTA_PAYLOAD(attribute), (gsize)IFNAMSIZ);

  if (memchr(data, '\0', size) == NULL || data[0] == '\0')
    return NULL;
  return tg_text_printable(data, IFNAMSIZ);
}

/* ---- routes ---- */

static const char *
route_type_name(guint8 type)
{
  switch (type) {
  case RTN_UNREACHABLE:
    return "unreachable ";
  case RTN_BLACKHOLE:
    return "blackhole ";
  case RTN_PROHIBIT:
    return "prohibit ";
  default:
    return "";
  }
}

/* The first next hop of a multipath route (its gateway, when it has one). */
static gboolean
parse_multipath(const struct rtattr *attribute, guint8 family, guint32 *oif,
                char *gateway)
{
  const struct rtnexthop *hop = RTA_DATA(attribute);
  int length = (int)RTA_PAYLOAD(attribute);
  const struct rtattr *table[RTA_MAX + 1] = { NULL };

  if (length < (int)sizeof *hop || hop->rtnh_len < sizeof *hop || hop->rtnh_len > length)
    return FALSE;
  *oif = (guint32)hop->rtnh_ifindex;
  if (!parse_attributes(RTNH_DATA(hop), hop->rtnh_len - (int)RTNH_LENGTH(0), table,
                        RTA_MAX))
    return FALSE;
  return table[RTA_GATEWAY] == NULL ||
         attribute_address(table[RTA_GATEWAY], family, gateway);
}

static gboolean
classify_route(TgNetwatchState *state, const struct nlmsghdr *message, char **cause)
{
  const struct rtmsg *route = NLMSG_DATA(message);
  const struct rtattr *table[RTA_MAX + 1] = { NULL };
  char destination[INET6_ADDRSTRLEN] = "", gateway[INET6_ADDRSTRLEN] = "";
  guint32 route_table, oif = 0;
  gboolean multipath = FALSE;
  g_autofree char *subject = NULL;
  g_autofree char *via = NULL;
  g_autofree char *dev = NULL;

  if (message->nlmsg_len < NLMSG_LENGTH(sizeof *route))
    return FALSE;
  if (route->rtm_family != AF_INET && route->rtm_family != AF_INET6)
    return FALSE;
  if (route->rtm_dst_len > address_size(route->rtm_family) * 8)
    return FALSE;
  if (!parse_attributes(RTM_RTA(route), (int)RTM_PAYLOAD(message), table, RTA_MAX))
    return FALSE;
  route_table = route->rtm_table;
  if (table[RTA_TABLE] != NULL && !attribute_u32(table[RTA_TABLE], &route_table))
    return FALSE;
  if (route_table != RT_TABLE_MAIN || (route->rtm_flags & RTM_F_CLONED))
    return FALSE;
  switch (route->rtm_type) {
  case RTN_UNICAST:
  case RTN_UNREACHABLE:
  case RTN_BLACKHOLE:
  case RTN_PROHIBIT:
    break;
  default: /* local, broadcast, multicast, anycast, ...: not where packets leave */
    return FALSE;
  }
  if (table[RTA_DST] != NULL &&
      !attribute_address(table[RTA_DST], route->rtm_family, destination))
    return FALSE;
  if (table[RTA_GATEWAY] != NULL &&
      !attribute_address(table[RTA_GATEWAY], route->rtm_family, gateway))
    return FALSE;
  if (table[RTA_OIF] != NULL && !attribute_u32(table[RTA_OIF], &oif))
    return FALSE;
  if (table[RTA_MULTIPATH] != NULL && table[RTA_GATEWAY] == NULL && oif == 0) {
    if (!parse_multipath(table[RTA_MULTIPATH], route->rtm_family, &oif, gateway))
      return FALSE;
    multipath = TRUE;
  }
  if (cause == NULL)
    return TRUE;

  if (route->rtm_dst_len == 0)
    subject = g_strdup_printf("%s%sdefault route", route_type_name(route->rtm_type),
                              route->rtm_family == AF_INET6 ? "IPv6 " : "");
  else
    subject =
        g_strdup_printf("%sroute %s/%u", route_type_name(route->rtm_type),
                        destination[0] != '\0' ? destination : "?", route->rtm_dst_len);
  via = gateway[0] != '\0' ? g_strdup_printf(" via %s", gateway) : g_strdup("");
  if (oif != 0) {
    g_autofree char *name = link_label(state, oif);
    dev = g_strdup_printf(" dev %s", name);
  }
  *cause = g_strdup_printf("%s %s%s%s%s", subject,
                           message->nlmsg_type == RTM_NEWROUTE ? "added" : "removed", via,
                           dev != NULL ? dev : "", multipath ? " (multipath)" : "");
  return TRUE;
}

/* ---- addresses ---- */

static const char *
address_state_name(guint32 flags)
{
  if (flags & IFA_F_DADFAILED)
    return "a duplicate";
  if (flags & IFA_F_TENTATIVE)
    return "tentative";
  if (flags & IFA_F_DEPRECATED)
    return "deprecated";
  return "usable";
}

static gboolean
classify_address(TgNetwatchState *state, const struct nlmsghdr *message, char **cause)
{
  const struct ifaddrmsg *address = NLMSG_DATA(message);
  const struct rtattr *table[IFA_MAX + 1] = { NULL };
  const struct rtattr *local;
  char text[INET6_ADDRSTRLEN];
  guint32 flags;
  g_autofree char *key = NULL;
  g_autofree char *name = NULL;
  gpointer known_flags;
  gboolean known;

  if (message->nlmsg_len < NLMSG_LENGTH(sizeof *address))
    return FALSE;
  if (address->ifa_family != AF_INET && address->ifa_family != AF_INET6)
    return FALSE;
  if (address->ifa_prefixlen > address_size(address->ifa_family) * 8)
    return FALSE;
  if (!parse_attributes(IFA_RTA(address), (int)IFA_PAYLOAD(message), table, IFA_MAX))
    return FALSE;
  /* the local address; IFA_ADDRESS is the peer's on point-to-point links */
  local = table[IFA_LOCAL] != NULL ? table[IFA_LOCAL] : table[IFA_ADDRESS];
  if (local == NULL || !attribute_address(local, address->ifa_family, text))
    return FALSE;
  flags = address->ifa_flags;
  if (table[IFA_FLAGS] != NULL && !attribute_u32(table[IFA_FLAGS], &flags))
    return FALSE;

  key = g_strdup_printf("%u %s/%u", address->ifa_index, text, address->ifa_prefixlen);
  known = g_hash_table_lookup_extended(state->addresses, key, NULL, &known_flags);
  if (message->nlmsg_type == RTM_DELADDR) {
    g_hash_table_remove(state->addresses, key);
  } else {
    guint32 before = GPOINTER_TO_UINT(known_flags);

    g_hash_table_insert(state->addresses, g_steal_pointer(&key), GUINT_TO_POINTER(flags));
    /* the same address again: a lifetime refreshed (router advertisement,
     * DHCP renewal) changes nothing, unless it became (un)usable */
    if (known && !((before ^ flags) & ADDRESS_STATE_FLAGS))
      return FALSE;
  }
  if (cause == NULL)
    return TRUE;

  name = link_label(state, address->ifa_index);
  if (message->nlmsg_type == RTM_DELADDR)
    *cause = g_strdup_printf("address %s/%u removed from %s", text,
                             address->ifa_prefixlen, name);
  else if (!known)
    *cause =
        g_strdup_printf("address %s/%u added to %s", text, address->ifa_prefixlen, name);
  else
    *cause = g_strdup_printf("address %s/%u on %s is %s now", text,
                             address->ifa_prefixlen, name, address_state_name(flags));
  return TRUE;
}

/* ---- links ---- */

static const char *
operstate_name(guint8 operstate)
{
  /* RFC 2863, IF_OPER_* */
  static const char *const names[] = { "unknown", "notpresent", "down", "lowerlayerdown",
                                       "testing", "dormant",    "up" };

  return operstate < G_N_ELEMENTS(names) ? names[operstate] : "unknown";
}

static gboolean
classify_link(TgNetwatchState *state, const struct nlmsghdr *message, char **cause)
{
  const struct ifinfomsg *info = NLMSG_DATA(message);
  const struct rtattr *table[IFLA_MAX + 1] = { NULL };
  gpointer key;
  Link *link;
  gboolean up, was_up, known;
  char *name = NULL;
  guint8 operstate = IF_OPER_UNKNOWN;

  if (message->nlmsg_len < NLMSG_LENGTH(sizeof *info))
    return FALSE;
  /* AF_BRIDGE: a bridge's view of its ports, not a link's state */
  if (info->ifi_family != AF_UNSPEC || info->ifi_index <= 0)
    return FALSE;
  if (!parse_attributes(IFLA_RTA(info), (int)IFLA_PAYLOAD(message), table, IFLA_MAX))
    return FALSE;
  if (table[IFLA_IFNAME] != NULL && (name = attribute_name(table[IFLA_IFNAME])) == NULL)
    return FALSE;
  if (table[IFLA_OPERSTATE] != NULL) {
    if (RTA_PAYLOAD(table[IFLA_OPERSTATE]) != 1) {
      g_free(name);
      return FALSE;
    }
    operstate = *(const guint8 *)RTA_DATA(table[IFLA_OPERSTATE]);
  }

  key = GINT_TO_POINTER(info->ifi_index);
  link = g_hash_table_lookup(state->links, key);
  known = link != NULL;
  was_up = known && link->up;
  if (message->nlmsg_type == RTM_DELLINK) {
    g_autofree char *label = name != NULL ? name : link_label(state, info->ifi_index);

    g_hash_table_remove(state->links, key);
    /* a link that was down carried nothing */
    if (known && !was_up)
      return FALSE;
    if (cause != NULL)
      *cause = g_strdup_printf("link %s removed", label);
    return TRUE;
  }

  /* IFF_RUNNING: up and operstate up (or unknown, for links without one) */
  up = (info->ifi_flags & IFF_UP) && (info->ifi_flags & IFF_RUNNING);
  if (link == NULL) {
    link = g_new0(Link, 1);
    link->name = g_strdup_printf("ifindex %d", info->ifi_index);
    g_hash_table_insert(state->links, key, link);
  }
  if (name != NULL) {
    g_free(link->name);
    link->name = name;
  }
  link->up = up;
  /* a link not seen before counts when it comes up; the rest of the
   * RTM_NEWLINKs (names, MTU, a wireless driver's events) change nothing */
  if (known ? up == was_up : !up)
    return FALSE;
  if (cause == NULL)
    return TRUE;
  if (up)
    *cause = g_strdup_printf("link %s up", link->name);
  else if (!(info->ifi_flags & IFF_UP))
    *cause = g_strdup_printf("link %s down", link->name);
  else
    *cause = g_strdup_printf("link %s down (operstate %s)", link->name,
                             operstate_name(operstate));
  return TRUE;
}

/* ---- a buffer of messages ---- */

guint
tg_netwatch_classify(TgNetwatchState *state, const void *buffer, gsize length,
                     char **cause)
{
  const struct nlmsghdr *message = buffer;
  int remaining = (int)MIN(length, (gsize)G_MAXINT);
  guint relevant = 0;

  g_return_val_if_fail(state != NULL, 0);

  for (; NLMSG_OK(message, remaining); message = NLMSG_NEXT(message, remaining)) {
    char **first = cause != NULL && *cause == NULL ? cause : NULL;
    gboolean changed;

    switch (message->nlmsg_type) {
    case RTM_NEWROUTE:
    case RTM_DELROUTE:
      changed = classify_route(state, message, first);
      break;
    case RTM_NEWADDR:
    case RTM_DELADDR:
      changed = classify_address(state, message, first);
      break;
    case RTM_NEWLINK:
    case RTM_DELLINK:
      changed = classify_link(state, message, first);
      break;
    default: /* NLMSG_DONE, NLMSG_ERROR, neighbours, rules, ... */
      changed = FALSE;
      break;
    }
    if (changed)
      relevant++;
  }
  return relevant;
}

/* ---- the netwatch ---- */

struct _TgNetwatch {
  TgNetwatchFunc func;
  gpointer user_data;

  /* the network */
  int netlink;
  guint netlink_source;
  guint8 *buffer; /* RECEIVE_BUFFER bytes */
  TgNetwatchState *state;
  guint debounce_timer;
  gint64 pending_since; /* monotonic, of the first change not reported yet */
  guint pending;        /* changes not reported yet */
  char *pending_cause;  /* of the first */

  /* logind */
  GDBusConnection *bus;
  gboolean inhibit;
  guint name_watch;
  guint sleep_subscription;
  char *logind;             /* the unique name owning org.freedesktop.login1 */
  GCancellable *inhibiting; /* while an Inhibit call is out */
  int inhibitor;            /* the delay lock's fd, or -1 */
  gboolean sleeping;        /* between PrepareForSleep(true) and (false) */
  guint hold_timer;         /* the safety timeout while sleeping */
};

/* Reads the links or addresses (@type RTM_GETLINK, RTM_GETADDR) into @state
 * through a socket of its own: blocking, as the kernel answers a dump at once. */
static gboolean
dump(TgNetwatchState *state, guint16 type, GError **error)
{
  struct {
    struct nlmsghdr header;
    struct ifinfomsg body; /* zeroes: AF_UNSPEC; an ifaddrmsg is shorter */
  } request;
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  struct timeval timeout = { DUMP_TIMEOUT_SECONDS, 0 };
  g_autofree guint8 *buffer = g_malloc(RECEIVE_BUFFER);
  guint32 seq = (guint32)g_get_monotonic_time();
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  gboolean done = FALSE;

  if (fd < 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED,
                "Cannot open a route netlink socket: %s", g_strerror(errno));
    return FALSE;
  }
  memset(&request, 0, sizeof request);
  request.header.nlmsg_len = NLMSG_LENGTH(type == RTM_GETLINK ? sizeof(struct ifinfomsg)
                                                              : sizeof(struct ifaddrmsg));
  request.header.nlmsg_type = type;
  request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  request.header.nlmsg_seq = seq;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (sendto(fd, &request, request.header.nlmsg_len, 0, (struct sockaddr *)&kernel,
             sizeof kernel) < 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "Cannot ask the kernel for %s: %s",
                type == RTM_GETLINK ? "links" : "addresses", g_strerror(errno));
    close(fd);
    return FALSE;
  }
  while (!done) {
    struct sockaddr_nl sender = { 0 };
    struct iovec vector = { buffer, RECEIVE_BUFFER };
    struct msghdr header = { .msg_name = &sender,
                             .msg_namelen = sizeof sender,
                             .msg_iov = &vector,
                             .msg_iovlen = 1 };
    ssize_t received = recvmsg(fd, &header, 0);
    const struct nlmsghdr *message = (const struct nlmsghdr *)buffer;
    int remaining = (int)received;

    if (received < 0) {
      if (errno == EINTR)
        continue;
      g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "Cannot read the kernel's %s: %s",
                  type == RTM_GETLINK ? "links" : "addresses", g_strerror(errno));
      break;
    }
    if (header.msg_namelen != sizeof sender || sender.nl_pid != 0 ||
        (header.msg_flags & MSG_TRUNC))
      continue;
    for (; NLMSG_OK(message, remaining); message = NLMSG_NEXT(message, remaining)) {
      if (message->nlmsg_seq != seq)
        continue;
      if (message->nlmsg_type == NLMSG_DONE) {
        done = TRUE;
      } else if (message->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *answer = NLMSG_DATA(message);
        int code =
            message->nlmsg_len >= NLMSG_LENGTH(sizeof *answer) ? -answer->error : EPROTO;

        if (code == 0)
          continue;
        g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "The kernel refused to list %s: %s",
                    type == RTM_GETLINK ? "links" : "addresses", g_strerror(code));
        close(fd);
        return FALSE;
      }
    }
    tg_netwatch_classify(state, buffer, (gsize)received, NULL);
  }
  close(fd);
  return done;
}

/* Forgets what was known and reads it again: links first, so that
 * addresses are named. */
static gboolean
resync(TgNetwatchState *state, GError **error)
{
  state_clear(state);
  return dump(state, RTM_GETLINK, error) && dump(state, RTM_GETADDR, error);
}

static gboolean
on_debounced(gpointer user_data)
{
  TgNetwatch *netwatch = user_data;
  g_autofree char *first = g_steal_pointer(&netwatch->pending_cause);
  g_autofree char *cause = NULL;
  guint more = netwatch->pending - 1;

  netwatch->debounce_timer = 0;
  netwatch->pending = 0;
  if (more == 0)
    cause = g_steal_pointer(&first);
  else
    cause =
        g_strdup_printf("%s (and %u more change%s)", first, more, more == 1 ? "" : "s");
  tg_message("netwatch: network changed: %s", cause);
  netwatch->func(TG_NETWATCH_NETWORK_CHANGED, cause, netwatch->user_data);
  return G_SOURCE_REMOVE;
}

/* @count changes came (their first cause is in pending_cause): report them
 * TG_NETWATCH_DEBOUNCE_MS after the last, at most ..._MAX_MS after the first. */
static void
note_changes(TgNetwatch *netwatch, guint count)
{
  gint64 now = g_get_monotonic_time();
  gint64 left;

  if (count == 0)
    return;
  if (netwatch->pending == 0)
    netwatch->pending_since = now;
  netwatch->pending += count;
  left = (netwatch->pending_since +
          TG_NETWATCH_DEBOUNCE_MAX_MS * G_GINT64_CONSTANT(1000) - now) /
         1000;
  g_clear_handle_id(&netwatch->debounce_timer, g_source_remove);
  netwatch->debounce_timer = g_timeout_add((guint)CLAMP(left, 0, TG_NETWATCH_DEBOUNCE_MS),
                                           on_debounced, netwatch);
}

static gboolean
on_netlink_readable(int fd, GIOCondition condition, gpointer user_data)
{
  TgNetwatch *netwatch = user_data;
  gboolean overrun = FALSE;

  for (;;) {
    struct sockaddr_nl sender = { 0 };
    struct iovec vector = { netwatch->buffer, RECEIVE_BUFFER };
    struct msghdr header = { .msg_name = &sender,
                             .msg_namelen = sizeof sender,
                             .msg_iov = &vector,
                             .msg_iovlen = 1 };
    ssize_t received = recvmsg(fd, &header, 0);
    guint count;

    if (received < 0) {
      if (errno == EINTR)
        continue;
      if (errno == ENOBUFS) {
        overrun = TRUE;
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      tg_warning("netwatch: cannot read the kernel's network events any more: %s",
                 g_strerror(errno));
      netwatch->netlink_source = 0;
      return G_SOURCE_REMOVE;
    }
    if (header.msg_namelen != sizeof sender || sender.nl_pid != 0) {
      tg_debug("netwatch: ignored a netlink message from port %u, not the kernel",
               sender.nl_pid);
      continue;
    }
    if (header.msg_flags & MSG_TRUNC) {
      overrun = TRUE; /* cut off: what it said is lost */
      continue;
    }
    count = tg_netwatch_classify(
        netwatch->state, netwatch->buffer, (gsize)received,
        netwatch->pending_cause == NULL ? &netwatch->pending_cause : NULL);
    note_changes(netwatch, count);
  }
  if (overrun) {
    g_autoptr(GError) error = NULL;

    if (netwatch->pending_cause == NULL)
      netwatch->pending_cause =
          g_strdup("the kernel dropped network events (receive queue overrun)");
    note_changes(netwatch, 1);
    if (!resync(netwatch->state, &error))
      tg_warning("netwatch: %s", error->message);
  }
  return G_SOURCE_CONTINUE;
}

static int
open_netlink(GError **error)
{
  struct sockaddr_nl address = { .nl_family = AF_NETLINK, .nl_groups = NETLINK_GROUPS };
  int size = RECEIVE_QUEUE;
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);

  if (fd < 0) {
    int code = errno;
    g_set_error(error, TG_ERROR,
                code == EPROTONOSUPPORT || code == EAFNOSUPPORT ? TG_ERROR_NOT_SUPPORTED
                                                                : TG_ERROR_FAILED,
                "Cannot open a route netlink socket: %s", g_strerror(code));
    return -1;
  }
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED,
                "Cannot listen to the kernel's network events: %s", g_strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

/* ---- logind ---- */

static void
drop_inhibitor(TgNetwatch *netwatch)
{
  g_clear_handle_id(&netwatch->hold_timer, g_source_remove);
  if (netwatch->inhibitor >= 0) {
    close(netwatch->inhibitor);
    netwatch->inhibitor = -1;
  }
}

static void
on_inhibited(GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GUnixFDList) fds = NULL;
  g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_finish(
      G_DBUS_CONNECTION(source), &fds, result, &error);
  TgNetwatch *netwatch;
  gint32 index;
  int fd;

  /* cancelled: the netwatch may be gone */
  if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  netwatch = user_data;
  g_clear_object(&netwatch->inhibiting);
  if (reply == NULL) {
    tg_text_error_printable(error);
    tg_warning("netwatch: logind gave no sleep inhibitor: %s", error->message);
    return;
  }
  g_variant_get(reply, "(h)", &index);
  if (fds == NULL || index < 0 || index >= g_unix_fd_list_get_length(fds)) {
    tg_warning("netwatch: logind's answer to Inhibit carried no file descriptor");
    return;
  }
  fd = g_unix_fd_list_get(fds, index, &error);
  if (fd < 0) {
    tg_warning("netwatch: cannot keep the sleep inhibitor: %s", error->message);
    return;
  }
  /* too late for this sleep: a new one is taken after the resume */
  if (netwatch->sleeping || netwatch->inhibitor >= 0) {
    close(fd);
    return;
  }
  netwatch->inhibitor = fd;
  tg_debug("netwatch: holding a delay sleep inhibitor");
}

static void
take_inhibitor(TgNetwatch *netwatch)
{
  if (!netwatch->inhibit || netwatch->logind == NULL || netwatch->inhibitor >= 0 ||
      netwatch->inhibiting != NULL || netwatch->sleeping)
    return;
  netwatch->inhibiting = g_cancellable_new();
  g_dbus_connection_call_with_unix_fd_list(
      netwatch->bus, LOGIND_NAME, LOGIND_PATH, LOGIND_MANAGER, "Inhibit",
      g_variant_new("(ssss)", "sleep", "tunnelgated",
                    "Close SSH tunnels cleanly before sleep", "delay"),
      G_VARIANT_TYPE("(h)"), G_DBUS_CALL_FLAGS_NO_AUTO_START, -1, NULL,
      netwatch->inhibiting, on_inhibited, netwatch);
}

static void
cancel_inhibit_call(TgNetwatch *netwatch)
{
  if (netwatch->inhibiting != NULL) {
    g_cancellable_cancel(netwatch->inhibiting);
    g_clear_object(&netwatch->inhibiting);
  }
}

static gboolean
on_hold_expired(gpointer user_data)
{
  TgNetwatch *netwatch = user_data;

  netwatch->hold_timer = 0;
  tg_warning("netwatch: letting the system sleep after %u ms, before the tunnels were "
             "closed",
             TG_NETWATCH_SLEEP_HOLD_MS);
  drop_inhibitor(netwatch);
  return G_SOURCE_REMOVE;
}

static void
on_prepare_for_sleep(GDBusConnection *bus, const char *sender, const char *path,
                     const char *interface, const char *member, GVariant *parameters,
                     gpointer user_data)
{
  TgNetwatch *netwatch = user_data;
  gboolean start;

  /* the bus filters by the name's owner; a signal sent to us directly by
   * anyone else is not logind's */
  if (netwatch->logind == NULL || g_strcmp0(sender, netwatch->logind) != 0 ||
      !g_variant_is_of_type(parameters, G_VARIANT_TYPE("(b)")))
    return;
  g_variant_get(parameters, "(b)", &start);
  if (start) {
    if (netwatch->sleeping)
      return;
    netwatch->sleeping = TRUE;
    tg_message("netwatch: the system is going to sleep%s",
               netwatch->inhibitor >= 0 ? " (held until the tunnels are closed)" : "");
    if (netwatch->inhibitor >= 0)
      netwatch->hold_timer =
          g_timeout_add(TG_NETWATCH_SLEEP_HOLD_MS, on_hold_expired, netwatch);
    netwatch->func(TG_NETWATCH_SLEEPING, "the system is going to sleep",
                   netwatch->user_data);
  } else {
    netwatch->sleeping = FALSE;
    g_clear_handle_id(&netwatch->hold_timer, g_source_remove);
    tg_message("netwatch: the system resumed");
    take_inhibitor(netwatch);
    netwatch->func(TG_NETWATCH_RESUMED, "the system resumed", netwatch->user_data);
  }
}

static void
on_logind_appeared(GDBusConnection *bus, const char *name, const char *owner,
                   gpointer user_data)
{
  TgNetwatch *netwatch = user_data;

  g_free(netwatch->logind);
  netwatch->logind = g_strdup(owner);
  tg_debug("netwatch: logind is on the bus as %s", owner);
  take_inhibitor(netwatch);
}

static void
on_logind_vanished(GDBusConnection *bus, const char *name, gpointer user_data)
{
  TgNetwatch *netwatch = user_data;

  if (netwatch->logind != NULL)
    tg_message("netwatch: logind left the bus");
  else
    tg_debug("netwatch: logind is not on the bus");
  g_clear_pointer(&netwatch->logind, g_free);
  cancel_inhibit_call(netwatch);
  drop_inhibitor(netwatch);
  netwatch->sleeping = FALSE;
}

/* ---- life cycle ---- */

TgNetwatch *
tg_netwatch_new(GDBusConnection *bus, gboolean inhibit, TgNetwatchFunc func,
                gpointer user_data, GError **error)
{
  g_autoptr(TgNetwatch) netwatch = NULL;

  g_return_val_if_fail(func != NULL, NULL);

  netwatch = g_new0(TgNetwatch, 1);
  netwatch->func = func;
  netwatch->user_data = user_data;
  netwatch->inhibit = inhibit;
  netwatch->inhibitor = -1;
  netwatch->netlink = -1;
  netwatch->state = tg_netwatch_state_new();
  /* subscribed before the dump: nothing falls between the two */
  netwatch->netlink = open_netlink(error);
  if (netwatch->netlink < 0 || !resync(netwatch->state, error))
    return NULL;
  netwatch->buffer = g_malloc(RECEIVE_BUFFER);
  netwatch->netlink_source =
      g_unix_fd_add(netwatch->netlink, G_IO_IN, on_netlink_readable, netwatch);

  if (bus != NULL) {
    netwatch->bus = g_object_ref(bus);
    netwatch->sleep_subscription = g_dbus_connection_signal_subscribe(
        bus, LOGIND_NAME, LOGIND_MANAGER, "PrepareForSleep", LOGIND_PATH, NULL,
        G_DBUS_SIGNAL_FLAGS_NONE, on_prepare_for_sleep, netwatch, NULL);
    netwatch->name_watch = g_bus_watch_name_on_connection(
        bus, LOGIND_NAME, G_BUS_NAME_WATCHER_FLAGS_NONE, on_logind_appeared,
        on_logind_vanished, netwatch, NULL);
  }
  return g_steal_pointer(&netwatch);
}

void
tg_netwatch_release_sleep(TgNetwatch *netwatch)
{
  g_return_if_fail(netwatch != NULL);

  /* after the resume the inhibitor is the next sleep's */
  if (!netwatch->sleeping || netwatch->inhibitor < 0)
    return;
  tg_debug("netwatch: letting the system sleep");
  drop_inhibitor(netwatch);
}

gboolean
tg_netwatch_holds_inhibitor(TgNetwatch *netwatch)
{
  g_return_val_if_fail(netwatch != NULL, FALSE);

  return netwatch->inhibitor >= 0;
}

void
tg_netwatch_free(TgNetwatch *netwatch)
{
  if (netwatch == NULL)
    return;
  if (netwatch->bus != NULL) {
    if (netwatch->name_watch != 0)
      g_bus_unwatch_name(netwatch->name_watch);
    if (netwatch->sleep_subscription != 0)
      g_dbus_connection_signal_unsubscribe(netwatch->bus, netwatch->sleep_subscription);
    cancel_inhibit_call(netwatch);
    g_object_unref(netwatch->bus);
  }
  drop_inhibitor(netwatch);
  g_clear_handle_id(&netwatch->netlink_source, g_source_remove);
  g_clear_handle_id(&netwatch->debounce_timer, g_source_remove);
  if (netwatch->netlink >= 0)
    close(netwatch->netlink);
  g_free(netwatch->buffer);
  g_free(netwatch->pending_cause);
  g_free(netwatch->logind);
  tg_netwatch_state_free(netwatch->state);
  g_free(netwatch);
}
