/* SPDX-License-Identifier: GPL-2.0-or-later */
/* nftables netlink plumbing for the firewall: one socket per purpose, batches
 * (one transaction each), small expression builders and event parsing. Knows
 * nothing about tunnelgate's rules; firewall.c decides what goes in the table. */
#pragma once

#include <glib.h>
#include <libnftnl/chain.h>
#include <libnftnl/expr.h>
#include <libnftnl/object.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <stdint.h>

/* Kernel 6.9+; not in Debian 12's uapi headers. */
#ifndef NFT_TABLE_F_PERSIST
#define NFT_TABLE_F_PERSIST 0x4
#endif

typedef struct _TgNftSocket TgNftSocket;
typedef struct _TgNftBatch TgNftBatch;

/* ---- sockets ---- */
TgNftSocket *tg_nft_socket_open(GError **error);
void tg_nft_socket_close(TgNftSocket *socket);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgNftSocket, tg_nft_socket_close)
guint32 tg_nft_socket_get_portid(const TgNftSocket *socket);

/* Sends the batch as one transaction and collects the kernel's answers: any
 * error aborts the whole transaction (nothing changed) and is reported with
 * the object it was about. errno_out (may be NULL) gets the first error. */
gboolean tg_nft_socket_commit(TgNftSocket *socket, TgNftBatch *batch, int *errno_out,
                              GError **error);

/* A dump request (NFT_MSG_GET*) for family/table; calls back per message. */
typedef void (*TgNftDumpFunc)(const struct nlmsghdr *message, gpointer user_data);
gboolean tg_nft_socket_dump(TgNftSocket *socket, guint16 msg_type, guint16 family,
                            const char *table, TgNftDumpFunc callback, gpointer user_data,
                            GError **error);

/* The elements of one set: NFT_MSG_NEWSETELEM messages, one callback each. */
gboolean tg_nft_socket_dump_elements(TgNftSocket *socket, guint16 family,
                                     const char *table, const char *set,
                                     TgNftDumpFunc callback, gpointer user_data,
                                     GError **error);

/* ---- batches ---- */
TgNftBatch *tg_nft_batch_new(void);
void tg_nft_batch_free(TgNftBatch *batch);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgNftBatch, tg_nft_batch_free)
guint tg_nft_batch_get_n_messages(const TgNftBatch *batch);

/* msg_type: NFT_MSG_NEW* / NFT_MSG_DEL*; nl_flags e.g. NLM_F_CREATE | NLM_F_EXCL.
 * what names the object in error messages. */
void tg_nft_batch_add_table(TgNftBatch *batch, guint16 msg_type, guint16 nl_flags,
                            const struct nftnl_table *table, const char *what);
void tg_nft_batch_add_chain(TgNftBatch *batch, guint16 msg_type, guint16 nl_flags,
                            const struct nftnl_chain *chain, const char *what);
void tg_nft_batch_add_rule(TgNftBatch *batch, guint16 msg_type, guint16 nl_flags,
                           struct nftnl_rule *rule, const char *what);
void tg_nft_batch_add_set(TgNftBatch *batch, guint16 msg_type, guint16 nl_flags,
                          struct nftnl_set *set, const char *what);
void tg_nft_batch_add_obj(TgNftBatch *batch, guint16 msg_type, guint16 nl_flags,
                          struct nftnl_obj *obj, const char *what);
/* The elements attached to set (at most TG_NFT_MAX_ELEMS_PER_MESSAGE). */
#define TG_NFT_MAX_ELEMS_PER_MESSAGE 256
void tg_nft_batch_add_elems(TgNftBatch *batch, guint16 msg_type, guint16 nl_flags,
                            struct nftnl_set *set, const char *what);

/* ---- expression builders (append to rule) ---- */
void tg_nft_add_meta(struct nftnl_rule *rule, guint32 key, guint32 dreg);
void tg_nft_add_payload(struct nftnl_rule *rule, guint32 base, guint32 offset,
                        guint32 length, guint32 dreg);
void tg_nft_add_cmp(struct nftnl_rule *rule, guint32 sreg, guint32 op, const void *data,
                    guint32 length);
void tg_nft_add_bitwise(struct nftnl_rule *rule, guint32 reg, const void *mask,
                        guint32 length);
void tg_nft_add_lookup(struct nftnl_rule *rule, guint32 sreg, const char *set_name);
/* The key in @sreg is NOT in the set. */
void tg_nft_add_lookup_inverted(struct nftnl_rule *rule, guint32 sreg,
                                const char *set_name);
/* Adds the key in @sreg to a dynamic set (from the packet path). */
void tg_nft_add_dynset_add(struct nftnl_rule *rule, guint32 sreg, const char *set_name);
void tg_nft_add_verdict(struct nftnl_rule *rule, int verdict, const char *chain);
void tg_nft_add_counter_ref(struct nftnl_rule *rule, const char *counter_name);
void tg_nft_add_log(struct nftnl_rule *rule, const char *prefix);
/* log to an nflog group (read with tg_nflog_open()) instead of the kernel log,
 * each packet at once */
void tg_nft_add_log_group(struct nftnl_rule *rule, guint16 group, const char *prefix);
void tg_nft_add_reject_tcp_reset(struct nftnl_rule *rule);

/* ---- events (NFNLGRP_NFTABLES) ---- */
typedef struct {
  guint16 msg_type; /* NFT_MSG_* */
  guint16 family;
  guint32 portid; /* netlink port of the socket that made the change */
  char table[64];
  char object[64]; /* chain, set or object name, "" if none */
  guint32 gen_pid; /* NFT_MSG_NEWGEN: the committing process */
  char gen_name[64];
} TgNftEvent;

/* A non-blocking socket subscribed to nftables events. */
TgNftSocket *tg_nft_events_open(GError **error);
int tg_nft_socket_get_fd(const TgNftSocket *socket);
/* Reads what is queued; calls back per event. Returns FALSE on event loss
 * (ENOBUFS: the caller must assume anything changed). */
typedef void (*TgNftEventFunc)(const TgNftEvent *event, gpointer user_data);
gboolean tg_nft_events_read(TgNftSocket *socket, TgNftEventFunc callback,
                            gpointer user_data);
const char *tg_nft_msg_type_name(guint16 msg_type);

/* ---- nflog (packets a `log group` rule hands to the daemon) ---- */
typedef struct {
  guint8 family;         /* NFPROTO_IPV4 / NFPROTO_IPV6 */
  const guint8 *payload; /* the network header on, at most 128 bytes */
  gsize length;
  gboolean has_uid; /* the socket's owner, when the packet had a socket */
  guint32 uid;
  const char *prefix; /* NULL if none */
} TgNflogPacket;

/* A non-blocking socket bound to nflog @group, copying each packet's
 * headers and its socket's uid. One listener per group and network
 * namespace: a second gets TG_ERROR_ADDRESS_IN_USE. */
TgNftSocket *tg_nflog_open(guint16 group, GError **error);
typedef void (*TgNflogFunc)(const TgNflogPacket *packet, gpointer user_data);
/* Reads what is queued; FALSE when the kernel dropped some (ENOBUFS). */
gboolean tg_nflog_read(TgNftSocket *socket, TgNflogFunc callback, gpointer user_data);
