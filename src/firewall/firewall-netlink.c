/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "firewall-netlink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <fcntl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "tg-error.h"

/* Room reserved before building one message: nftnl's builders do not check
 * the buffer's size, so every message gets more than it can use. */
#define MESSAGE_HEADROOM 8192
#define ELEMS_HEADROOM (TG_NFT_MAX_ELEMS_PER_MESSAGE * 160 + MESSAGE_HEADROOM)
#define RECEIVE_BUFFER (1 << 20)

struct _TgNftSocket {
  struct mnl_socket *nl;
  guint32 portid;
  guint32 seq;
  guint8 *buffer; /* RECEIVE_BUFFER bytes, for every answer on this socket */
};

struct _TgNftBatch {
  guint8 *data;
  gsize length;
  gsize capacity;
  guint32 first_seq; /* relative seq: the begin message is 0 */
  GPtrArray *what;   /* description per message, index = seq - 1 */
};

/* ---- sockets ---- */

static TgNftSocket *
socket_open(int flags, GError **error)
{
  g_autoptr(TgNftSocket) socket = g_new0(TgNftSocket, 1);
  int one = 1;
  int size = RECEIVE_BUFFER;

  socket->nl = mnl_socket_open2(NETLINK_NETFILTER, flags | SOCK_CLOEXEC);
  if (socket->nl == NULL) {
    int code = errno;
    g_set_error(error, TG_ERROR,
                code == EPROTONOSUPPORT || code == EAFNOSUPPORT ? TG_ERROR_NOT_SUPPORTED
                                                                : TG_ERROR_FAILED,
                "Cannot open a netfilter netlink socket: %s", g_strerror(code));
    return NULL;
  }
  if (mnl_socket_bind(socket->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "Cannot bind a netlink socket: %s",
                g_strerror(errno));
    return NULL;
  }
  /* Errors name the failing object (extended ack) and carry only its header. */
  mnl_socket_setsockopt(socket->nl, NETLINK_EXT_ACK, &one, sizeof one);
  mnl_socket_setsockopt(socket->nl, NETLINK_CAP_ACK, &one, sizeof one);
  if (setsockopt(mnl_socket_get_fd(socket->nl), SOL_SOCKET, SO_RCVBUFFORCE, &size,
                 sizeof size) != 0)
    setsockopt(mnl_socket_get_fd(socket->nl), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  socket->portid = mnl_socket_get_portid(socket->nl);
  socket->buffer = g_malloc0(RECEIVE_BUFFER);
  socket->seq = (guint32)time(NULL);
  return g_steal_pointer(&socket);
}

TgNftSocket *
tg_nft_socket_open(GError **error)
{
  return socket_open(0, error);
}

void
tg_nft_socket_close(TgNftSocket *socket)
{
  if (socket == NULL)
    return;
  if (socket->nl != NULL)
    mnl_socket_close(socket->nl);
  g_free(socket->buffer);
  g_free(socket);
}

guint32
tg_nft_socket_get_portid(const TgNftSocket *socket)
{
  return socket->portid;
}

int
tg_nft_socket_get_fd(const TgNftSocket *socket)
{
  return mnl_socket_get_fd(socket->nl);
}

static void
set_netlink_error(GError **error, int code, const char *what, const char *detail)
{
  g_set_error(error, TG_ERROR,
              code == EOPNOTSUPP || code == EPROTONOSUPPORT || code == EAFNOSUPPORT
                  ? TG_ERROR_NOT_SUPPORTED
                  : TG_ERROR_FAILED,
              "nftables refused %s: %s%s%s", what != NULL ? what : "the batch",
              g_strerror(code), detail != NULL ? ": " : "", detail != NULL ? detail : "");
}

static int
extack_attribute(const struct nlattr *attribute, void *data)
{
  const char **message = data;

  if (mnl_attr_get_type(attribute) == NLMSGERR_ATTR_MSG &&
      mnl_attr_validate(attribute, MNL_TYPE_NUL_STRING) == 0)
    *message = mnl_attr_get_str(attribute);
  return MNL_CB_OK;
}

/* The error text the kernel attached (extended ack), if any. */
static const char *
extack_message(const struct nlmsghdr *message)
{
  const struct nlmsgerr *error = mnl_nlmsg_get_payload(message);
  const char *text = NULL;
  gsize offset = sizeof *error;

  if (!(message->nlmsg_flags & NLM_F_ACK_TLVS))
    return NULL;
  if (!(message->nlmsg_flags & NLM_F_CAPPED))
    offset += error->msg.nlmsg_len - sizeof error->msg;
  if (mnl_nlmsg_get_payload_len(message) <= offset)
    return NULL;
  mnl_attr_parse_payload((const char *)error + offset,
                         mnl_nlmsg_get_payload_len(message) - offset, extack_attribute,
                         &text);
  return text;
}

gboolean
tg_nft_socket_commit(TgNftSocket *socket, TgNftBatch *batch, int *errno_out,
                     GError **error)
{
  int fd = mnl_socket_get_fd(socket->nl);
  guint8 *buffer = socket->buffer;
  guint32 base = socket->seq;
  int size;
  ssize_t received;
  int first_error = 0;

  if (errno_out != NULL)
    *errno_out = 0;
  /* Sequence numbers are absolute per socket: renumber the batch's messages. */
  for (gsize offset = 0; offset < batch->length;) {
    struct nlmsghdr *message = (struct nlmsghdr *)(batch->data + offset);
    message->nlmsg_seq += base;
    offset += message->nlmsg_len;
  }
  {
    struct nlmsghdr *end =
        nftnl_batch_end((char *)batch->data + batch->length, base + batch->what->len + 1);
    batch->length += end->nlmsg_len;
  }
  socket->seq += batch->what->len + 2;

  /* The whole batch must fit into one datagram: the transaction is one send. */
  size = (int)MIN(batch->length + 65536, (gsize)G_MAXINT / 2);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
  if (mnl_socket_sendto(socket->nl, batch->data, batch->length) < 0) {
    int code = errno;
    if (errno_out != NULL)
      *errno_out = code;
    set_netlink_error(error, code, "the batch (send)", NULL);
    return FALSE;
  }

  /* The kernel handles a batch inside sendmsg(): every answer is queued now.
   * Only errors are answered (no NLM_F_ACK): read until nothing is left. */
  while ((received = recv(fd, buffer, RECEIVE_BUFFER, MSG_DONTWAIT)) > 0) {
    const struct nlmsghdr *message = (const struct nlmsghdr *)buffer;
    int remaining = (int)received;

    for (; mnl_nlmsg_ok(message, remaining);
         message = mnl_nlmsg_next(message, &remaining)) {
      const struct nlmsgerr *answer;
      guint32 index;

      if (message->nlmsg_type != NLMSG_ERROR)
        continue;
      answer = mnl_nlmsg_get_payload(message);
      if (answer->error == 0 || first_error != 0)
        continue;
      first_error = -answer->error;
      index = answer->msg.nlmsg_seq - base;
      set_netlink_error(error, first_error,
                        index >= 1 && index <= batch->what->len
                            ? g_ptr_array_index(batch->what, index - 1)
                            : NULL,
                        extack_message(message));
    }
  }
  if (errno_out != NULL)
    *errno_out = first_error;
  return first_error == 0;
}

static gboolean
dump(TgNftSocket *socket, guint16 msg_type, guint16 family, const char *table,
     const char *set, TgNftDumpFunc callback, gpointer user_data, GError **error)
{
  char *buffer = (char *)socket->buffer;
  guint32 seq = socket->seq++;
  struct nlmsghdr *request;

  memset(buffer, 0, MNL_SOCKET_BUFFER_SIZE); /* attribute padding is sent too */
  request = nftnl_nlmsg_build_hdr(buffer, msg_type, family, NLM_F_DUMP, seq);

  if (table != NULL)
    mnl_attr_put_strz(request, 1 /* NFTA_*_TABLE */, table);
  if (set != NULL)
    mnl_attr_put_strz(request, NFTA_SET_ELEM_LIST_SET, set);
  if (mnl_socket_sendto(socket->nl, request, request->nlmsg_len) < 0) {
    set_netlink_error(error, errno, "a dump request", NULL);
    return FALSE;
  }
  for (;;) {
    ssize_t received = mnl_socket_recvfrom(socket->nl, buffer, RECEIVE_BUFFER);
    const struct nlmsghdr *message = (const struct nlmsghdr *)buffer;
    int remaining = (int)received;

    if (received < 0) {
      set_netlink_error(error, errno, "a dump request", NULL);
      return FALSE;
    }
    for (; mnl_nlmsg_ok(message, remaining);
         message = mnl_nlmsg_next(message, &remaining)) {
      if (message->nlmsg_seq != seq)
        continue; /* a late answer to something else */
      if (message->nlmsg_type == NLMSG_DONE)
        return TRUE;
      if (message->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *answer = mnl_nlmsg_get_payload(message);
        if (answer->error == 0)
          return TRUE;
        set_netlink_error(error, -answer->error, "a dump request",
                          extack_message(message));
        return FALSE;
      }
      callback(message, user_data);
    }
  }
}

gboolean
tg_nft_socket_dump(TgNftSocket *socket, guint16 msg_type, guint16 family,
                   const char *table, TgNftDumpFunc callback, gpointer user_data,
                   GError **error)
{
  return dump(socket, msg_type, family, table, NULL, callback, user_data, error);
}

gboolean
tg_nft_socket_dump_elements(TgNftSocket *socket, guint16 family, const char *table,
                            const char *set, TgNftDumpFunc callback, gpointer user_data,
                            GError **error)
{
  return dump(socket, NFT_MSG_GETSETELEM, family, table, set, callback, user_data, error);
}

/* ---- batches ---- */

static void
batch_reserve(TgNftBatch *batch, gsize extra)
{
  if (batch->length + extra <= batch->capacity)
    return;
  batch->capacity = MAX(batch->capacity * 2, batch->length + extra);
  batch->data = g_realloc(batch->data, batch->capacity);
  memset(batch->data + batch->length, 0, batch->capacity - batch->length);
}

TgNftBatch *
tg_nft_batch_new(void)
{
  TgNftBatch *batch = g_new0(TgNftBatch, 1);
  struct nlmsghdr *begin;

  batch->what = g_ptr_array_new_with_free_func(g_free);
  batch_reserve(batch, 2 * MESSAGE_HEADROOM);
  begin = nftnl_batch_begin((char *)batch->data, 0);
  batch->length = begin->nlmsg_len;
  return batch;
}

void
tg_nft_batch_free(TgNftBatch *batch)
{
  if (batch == NULL)
    return;
  g_ptr_array_unref(batch->what);
  g_free(batch->data);
  g_free(batch);
}

guint
tg_nft_batch_get_n_messages(const TgNftBatch *batch)
{
  return batch->what->len;
}

/* Starts a message; the caller fills the payload, then batch_finish(). */
static struct nlmsghdr *
batch_start(TgNftBatch *batch, gsize headroom, guint16 msg_type, guint16 family,
            guint16 nl_flags, const char *what)
{
  /* + room for the batch end message that commit appends */
  batch_reserve(batch, headroom + MESSAGE_HEADROOM);
  g_ptr_array_add(batch->what, g_strdup(what));
  return nftnl_nlmsg_build_hdr((char *)batch->data + batch->length, msg_type, family,
                               nl_flags, batch->what->len);
}

static void
batch_finish(TgNftBatch *batch, struct nlmsghdr *message)
{
  batch->length += message->nlmsg_len;
}

void
tg_nft_batch_add_table(TgNftBatch *batch, guint16 msg_type, guint16 nl_flags,
                       const struct nftnl_table *table, const char *what)
{
  struct nlmsghdr *message =
      batch_start(batch, MESSAGE_HEADROOM, msg_type,
                  nftnl_table_get_u32(table, NFTNL_TABLE_FAMILY), nl_flags, what);
  nftnl_table_nlmsg_build_payload(message, table);
  batch_finish(batch, message);
}

void
tg_nft_batch_add_chain(TgNftBatch *batch, guint16 msg_type, guint16 nl_flags,
                       const struct nftnl_chain *chain, const char *what)
{
  struct nlmsghdr *message =
      batch_start(batch, MESSAGE_HEADROOM, msg_type,
                  nftnl_chain_get_u32(chain, NFTNL_CHAIN_FAMILY), nl_flags, what);
  nftnl_chain_nlmsg_build_payload(message, chain);
  batch_finish(batch, message);
}

void
tg_nft_batch_add_rule(TgNftBatch *batch, guint16 msg_type, guint16 nl_flags,
                      struct nftnl_rule *rule, const char *what)
{
  struct nlmsghdr *message =
      batch_start(batch, MESSAGE_HEADROOM, msg_type,
                  nftnl_rule_get_u32(rule, NFTNL_RULE_FAMILY), nl_flags, what);
  nftnl_rule_nlmsg_build_payload(message, rule);
  batch_finish(batch, message);
}

void
tg_nft_batch_add_set(TgNftBatch *batch, guint16 msg_type, guint16 nl_flags,
                     struct nftnl_set *set, const char *what)
{
  struct nlmsghdr *message =
      batch_start(batch, MESSAGE_HEADROOM, msg_type,
                  nftnl_set_get_u32(set, NFTNL_SET_FAMILY), nl_flags, what);
  nftnl_set_nlmsg_build_payload(message, set);
  batch_finish(batch, message);
}

void
tg_nft_batch_add_obj(TgNftBatch *batch, guint16 msg_type, guint16 nl_flags,
                     struct nftnl_obj *obj, const char *what)
{
  struct nlmsghdr *message =
      batch_start(batch, MESSAGE_HEADROOM, msg_type,
                  nftnl_obj_get_u32(obj, NFTNL_OBJ_FAMILY), nl_flags, what);
  nftnl_obj_nlmsg_build_payload(message, obj);
  batch_finish(batch, message);
}

void
tg_nft_batch_add_elems(TgNftBatch *batch, guint16 msg_type, guint16 nl_flags,
                       struct nftnl_set *set, const char *what)
{
  struct nlmsghdr *message =
      batch_start(batch, ELEMS_HEADROOM, msg_type,
                  nftnl_set_get_u32(set, NFTNL_SET_FAMILY), nl_flags, what);
  nftnl_set_elems_nlmsg_build_payload(message, set);
  batch_finish(batch, message);
}

/* ---- expression builders ---- */

static struct nftnl_expr *
expr_new(const char *name)
{
  struct nftnl_expr *expr = nftnl_expr_alloc(name);
  g_assert(expr != NULL);
  return expr;
}

void
tg_nft_add_meta(struct nftnl_rule *rule, guint32 key, guint32 dreg)
{
  struct nftnl_expr *expr = expr_new("meta");
  nftnl_expr_set_u32(expr, NFTNL_EXPR_META_KEY, key);
  nftnl_expr_set_u32(expr, NFTNL_EXPR_META_DREG, dreg);
  nftnl_rule_add_expr(rule, expr);
}

void
tg_nft_add_payload(struct nftnl_rule *rule, guint32 base, guint32 offset, guint32 length,
                   guint32 dreg)
{
  struct nftnl_expr *expr = expr_new("payload");
  nftnl_expr_set_u32(expr, NFTNL_EXPR_PAYLOAD_BASE, base);
  nftnl_expr_set_u32(expr, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
  nftnl_expr_set_u32(expr, NFTNL_EXPR_PAYLOAD_LEN, length);
  nftnl_expr_set_u32(expr, NFTNL_EXPR_PAYLOAD_DREG, dreg);
  nftnl_rule_add_expr(rule, expr);
}

void
tg_nft_add_cmp(struct nftnl_rule *rule, guint32 sreg, guint32 op, const void *data,
               guint32 length)
{
  struct nftnl_expr *expr = expr_new("cmp");
  nftnl_expr_set_u32(expr, NFTNL_EXPR_CMP_SREG, sreg);
  nftnl_expr_set_u32(expr, NFTNL_EXPR_CMP_OP, op);
  nftnl_expr_set(expr, NFTNL_EXPR_CMP_DATA, data, length);
  nftnl_rule_add_expr(rule, expr);
}

void
tg_nft_add_bitwise(struct nftnl_rule *rule, guint32 reg, const void *mask, guint32 length)
{
  struct nftnl_expr *expr = expr_new("bitwise");
  guint8 zero[16] = { 0 };

  g_assert(length <= sizeof zero);
  nftnl_expr_set_u32(expr, NFTNL_EXPR_BITWISE_SREG, reg);
  nftnl_expr_set_u32(expr, NFTNL_EXPR_BITWISE_DREG, reg);
  nftnl_expr_set_u32(expr, NFTNL_EXPR_BITWISE_LEN, length);
  nftnl_expr_set(expr, NFTNL_EXPR_BITWISE_MASK, mask, length);
  nftnl_expr_set(expr, NFTNL_EXPR_BITWISE_XOR, zero, length);
  nftnl_rule_add_expr(rule, expr);
}

void
tg_nft_add_lookup(struct nftnl_rule *rule, guint32 sreg, const char *set_name)
{
  struct nftnl_expr *expr = expr_new("lookup");
  nftnl_expr_set_u32(expr, NFTNL_EXPR_LOOKUP_SREG, sreg);
  nftnl_expr_set_str(expr, NFTNL_EXPR_LOOKUP_SET, set_name);
  nftnl_rule_add_expr(rule, expr);
}

void
tg_nft_add_lookup_inverted(struct nftnl_rule *rule, guint32 sreg, const char *set_name)
{
  struct nftnl_expr *expr = expr_new("lookup");
  nftnl_expr_set_u32(expr, NFTNL_EXPR_LOOKUP_SREG, sreg);
  nftnl_expr_set_str(expr, NFTNL_EXPR_LOOKUP_SET, set_name);
  nftnl_expr_set_u32(expr, NFTNL_EXPR_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
  nftnl_rule_add_expr(rule, expr);
}

void
tg_nft_add_dynset_add(struct nftnl_rule *rule, guint32 sreg, const char *set_name)
{
  struct nftnl_expr *expr = expr_new("dynset");
  nftnl_expr_set_u32(expr, NFTNL_EXPR_DYNSET_SREG_KEY, sreg);
  nftnl_expr_set_u32(expr, NFTNL_EXPR_DYNSET_OP, NFT_DYNSET_OP_ADD);
  nftnl_expr_set_str(expr, NFTNL_EXPR_DYNSET_SET_NAME, set_name);
  nftnl_rule_add_expr(rule, expr);
}

void
tg_nft_add_verdict(struct nftnl_rule *rule, int verdict, const char *chain)
{
  struct nftnl_expr *expr = expr_new("immediate");
  nftnl_expr_set_u32(expr, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
  nftnl_expr_set_u32(expr, NFTNL_EXPR_IMM_VERDICT, (guint32)verdict);
  if (chain != NULL)
    nftnl_expr_set_str(expr, NFTNL_EXPR_IMM_CHAIN, chain);
  nftnl_rule_add_expr(rule, expr);
}

void
tg_nft_add_counter_ref(struct nftnl_rule *rule, const char *counter_name)
{
  struct nftnl_expr *expr = expr_new("objref");
  nftnl_expr_set_u32(expr, NFTNL_EXPR_OBJREF_IMM_TYPE, NFT_OBJECT_COUNTER);
  nftnl_expr_set_str(expr, NFTNL_EXPR_OBJREF_IMM_NAME, counter_name);
  nftnl_rule_add_expr(rule, expr);
}

void
tg_nft_add_log(struct nftnl_rule *rule, const char *prefix)
{
  struct nftnl_expr *expr = expr_new("log");
  nftnl_expr_set_str(expr, NFTNL_EXPR_LOG_PREFIX, prefix);
  nftnl_rule_add_expr(rule, expr);
}

void
tg_nft_add_log_group(struct nftnl_rule *rule, guint16 group, const char *prefix)
{
  struct nftnl_expr *expr = expr_new("log");
  nftnl_expr_set_u16(expr, NFTNL_EXPR_LOG_GROUP, group);
  nftnl_expr_set_str(expr, NFTNL_EXPR_LOG_PREFIX, prefix);
  nftnl_expr_set_u16(expr, NFTNL_EXPR_LOG_QTHRESHOLD, 1); /* at once, not in batches */
  nftnl_rule_add_expr(rule, expr);
}

void
tg_nft_add_reject_tcp_reset(struct nftnl_rule *rule)
{
  struct nftnl_expr *expr = expr_new("reject");
  nftnl_expr_set_u32(expr, NFTNL_EXPR_REJECT_TYPE, NFT_REJECT_TCP_RST);
  nftnl_expr_set_u8(expr, NFTNL_EXPR_REJECT_CODE, 0);
  nftnl_rule_add_expr(rule, expr);
}

/* ---- events ---- */

TgNftSocket *
tg_nft_events_open(GError **error)
{
  g_autoptr(TgNftSocket) socket = socket_open(SOCK_NONBLOCK, error);
  int group = NFNLGRP_NFTABLES;

  if (socket == NULL)
    return NULL;
  if (mnl_socket_setsockopt(socket->nl, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) <
      0) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED,
                "Cannot subscribe to nftables events: %s", g_strerror(errno));
    return NULL;
  }
  return g_steal_pointer(&socket);
}

static void
copy_string_attribute(const struct nlattr *attribute, char *out, gsize size)
{
  if (mnl_attr_validate(attribute, MNL_TYPE_NUL_STRING) == 0)
    g_strlcpy(out, mnl_attr_get_str(attribute), size);
}

static void
parse_event(const struct nlmsghdr *message, TgNftEvent *event)
{
  const struct nfgenmsg *header = mnl_nlmsg_get_payload(message);
  const struct nlattr *attribute;
  guint16 object_attribute;

  memset(event, 0, sizeof *event);
  event->msg_type = NFNL_MSG_TYPE(message->nlmsg_type);
  event->family = header->nfgen_family;
  event->portid = message->nlmsg_pid;
  /* table is attribute 1 everywhere; the object's name is 2, but 3 for chains */
  object_attribute =
      event->msg_type == NFT_MSG_NEWCHAIN || event->msg_type == NFT_MSG_DELCHAIN
          ? NFTA_CHAIN_NAME
          : 2;

  mnl_attr_for_each(attribute, message, sizeof *header)
  {
    guint16 type = mnl_attr_get_type(attribute);

    if (event->msg_type == NFT_MSG_NEWGEN) {
      if (type == NFTA_GEN_PROC_PID && mnl_attr_validate(attribute, MNL_TYPE_U32) == 0)
        event->gen_pid = ntohl(mnl_attr_get_u32(attribute));
      else if (type == NFTA_GEN_PROC_NAME)
        copy_string_attribute(attribute, event->gen_name, sizeof event->gen_name);
      continue;
    }
    if (type == 1)
      copy_string_attribute(attribute, event->table, sizeof event->table);
    else if (type == object_attribute && event->msg_type != NFT_MSG_NEWTABLE &&
             event->msg_type != NFT_MSG_DELTABLE)
      copy_string_attribute(attribute, event->object, sizeof event->object);
  }
}

/* Reads what is queued on a non-blocking socket, handing each message to
 * @handle; FALSE when the kernel dropped some (ENOBUFS). */
static gboolean
read_queued(TgNftSocket *socket,
            void (*handle)(const struct nlmsghdr *message, gpointer data), gpointer data)
{
  guint8 *buffer = socket->buffer;
  gboolean complete = TRUE;

  for (;;) {
    ssize_t received = recv(mnl_socket_get_fd(socket->nl), buffer, RECEIVE_BUFFER, 0);
    const struct nlmsghdr *message = (const struct nlmsghdr *)buffer;
    int remaining = (int)received;

    if (received < 0) {
      if (errno == ENOBUFS) {
        complete = FALSE;
        continue;
      }
      if (errno == EINTR)
        continue;
      return complete; /* EAGAIN: all read */
    }
    for (; mnl_nlmsg_ok(message, remaining);
         message = mnl_nlmsg_next(message, &remaining))
      handle(message, data);
  }
}

typedef struct {
  TgNftEventFunc callback;
  gpointer user_data;
} EventReader;

static void
handle_event(const struct nlmsghdr *message, gpointer data)
{
  EventReader *reader = data;
  TgNftEvent event;

  if (NFNL_SUBSYS_ID(message->nlmsg_type) != NFNL_SUBSYS_NFTABLES)
    return;
  parse_event(message, &event);
  reader->callback(&event, reader->user_data);
}

gboolean
tg_nft_events_read(TgNftSocket *socket, TgNftEventFunc callback, gpointer user_data)
{
  EventReader reader = { callback, user_data };

  return read_queued(socket, handle_event, &reader);
}

/* ---- nflog ---- */

/* The kernel copies this much of each packet: IPv6 and TCP headers fit. */
#define NFLOG_COPY_RANGE 128

TgNftSocket *
tg_nflog_open(guint16 group, GError **error)
{
  g_autoptr(TgNftSocket) socket = socket_open(0, error);
  guint8 buffer[MNL_SOCKET_BUFFER_SIZE];
  struct nlmsghdr *message;
  struct nfgenmsg *header;
  struct nfulnl_msg_config_cmd command = { NFULNL_CFG_CMD_BIND };
  struct nfulnl_msg_config_mode mode = { htonl(NFLOG_COPY_RANGE), NFULNL_COPY_PACKET, 0 };
  guint32 seq;
  int fd;
  ssize_t received;

  if (socket == NULL)
    return NULL;
  seq = ++socket->seq;
  memset(buffer, 0, sizeof buffer); /* attribute padding is sent too */
  message = mnl_nlmsg_put_header(buffer);
  message->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
  message->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  message->nlmsg_seq = seq;
  header = mnl_nlmsg_put_extra_header(message, sizeof *header);
  header->nfgen_family = AF_UNSPEC;
  header->version = NFNETLINK_V0;
  header->res_id = htons(group);
  mnl_attr_put(message, NFULA_CFG_CMD, sizeof command, &command);
  mnl_attr_put(message, NFULA_CFG_MODE, sizeof mode, &mode);
  if (mnl_socket_sendto(socket->nl, message, message->nlmsg_len) < 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "Cannot configure nflog group %u: %s",
                group, g_strerror(errno));
    return NULL;
  }
  received = mnl_socket_recvfrom(socket->nl, buffer, sizeof buffer);
  if (received < 0 ||
      mnl_cb_run(buffer, (size_t)received, seq, socket->portid, NULL, NULL) < 0) {
    g_set_error(error, TG_ERROR,
                errno == EBUSY ? TG_ERROR_ADDRESS_IN_USE : TG_ERROR_FAILED,
                "Cannot bind nflog group %u: %s", group, g_strerror(errno));
    return NULL;
  }
  fd = mnl_socket_get_fd(socket->nl);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return g_steal_pointer(&socket);
}

static void
parse_nflog(const struct nlmsghdr *message, TgNflogPacket *packet)
{
  const struct nfgenmsg *header = mnl_nlmsg_get_payload(message);
  const struct nlattr *attribute;

  memset(packet, 0, sizeof *packet);
  packet->family = header->nfgen_family;
  mnl_attr_for_each(attribute, message, sizeof *header)
  {
    switch (mnl_attr_get_type(attribute)) {
    case NFULA_PAYLOAD:
      packet->payload = mnl_attr_get_payload(attribute);
      packet->length = mnl_attr_get_payload_len(attribute);
      break;
    case NFULA_UID:
      if (mnl_attr_validate(attribute, MNL_TYPE_U32) == 0) {
        packet->has_uid = TRUE;
        packet->uid = ntohl(mnl_attr_get_u32(attribute));
      }
      break;
    case NFULA_PREFIX:
      if (mnl_attr_validate(attribute, MNL_TYPE_NUL_STRING) == 0)
        packet->prefix = mnl_attr_get_str(attribute);
      break;
    default:
      break;
    }
  }
}

typedef struct {
  TgNflogFunc callback;
  gpointer user_data;
} NflogReader;

static void
handle_nflog(const struct nlmsghdr *message, gpointer data)
{
  NflogReader *reader = data;
  TgNflogPacket packet;

  if (message->nlmsg_type != ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET))
    return;
  parse_nflog(message, &packet);
  reader->callback(&packet, reader->user_data);
}

gboolean
tg_nflog_read(TgNftSocket *socket, TgNflogFunc callback, gpointer user_data)
{
  NflogReader reader = { callback, user_data };

  return read_queued(socket, handle_nflog, &reader);
}

const char *
tg_nft_msg_type_name(guint16 msg_type)
{
  static const char *const names[] = {
    [NFT_MSG_NEWTABLE] = "NEWTABLE",     [NFT_MSG_DELTABLE] = "DELTABLE",
    [NFT_MSG_NEWCHAIN] = "NEWCHAIN",     [NFT_MSG_DELCHAIN] = "DELCHAIN",
    [NFT_MSG_NEWRULE] = "NEWRULE",       [NFT_MSG_DELRULE] = "DELRULE",
    [NFT_MSG_NEWSET] = "NEWSET",         [NFT_MSG_DELSET] = "DELSET",
    [NFT_MSG_NEWSETELEM] = "NEWSETELEM", [NFT_MSG_DELSETELEM] = "DELSETELEM",
    [NFT_MSG_NEWGEN] = "NEWGEN",         [NFT_MSG_NEWOBJ] = "NEWOBJ",
    [NFT_MSG_DELOBJ] = "DELOBJ",
  };

  if (msg_type < G_N_ELEMENTS(names) && names[msg_type] != NULL)
    return names[msg_type];
  return "CHANGE";
}
