/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "enforcer.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include <gio/gio.h>

#include "accounts.h"
#include "firewall.h"
#include "log.h"
#include "resolve.h"
#include "tg-error.h"

#define RESOLVE_INTERVAL_SECONDS 300
/* refused local connections: journal lines per second, and how many the
 * firewall's description remembers */
#define REFUSALS_LOGGED_PER_SECOND 10
#define REFUSALS_REMEMBERED 16

/* What the table is built from, to tell a structural change (a new table)
 * from a change of set contents (element updates). */
typedef struct {
  gboolean egress_lockdown;
  gboolean detect_ssh_banner;
  gboolean server_mode;
  gboolean listener_guard;
  gboolean connect_back_pinning;
  gboolean log_rejections;
  GArray *ssh_ports; /* TgPortRange */
} Shape;

typedef struct {
  int family;
  guint16 port;
  TgFirewallAddress address;
  gboolean guard_remote;
  GArray *sources; /* TgFirewallAddress of the listener's family */
  gboolean guard_local;
  GArray *uids; /* guint32: the local users who may connect (besides root) */
  char *tunnel_id;
  char *owner_name;
} Guard;

struct _TgEnforcer {
  TgFirewall *firewall; /* NULL: nothing in force */
  Shape shape;
  GArray *exempt_uids;     /* guint32, sorted */
  GArray *server_networks; /* TgFirewallAddress: PermitServer addresses and networks */
  GArray *resolved;        /* TgFirewallAddress: PermitServer names, resolved */
  GPtrArray *server_names; /* char*: PermitServer names to resolve */
  GHashTable *guards;      /* "family/address/port" -> Guard */
  TgFirewallUnknownFunc unknown_func; /* server mode: handed to every table */
  gpointer unknown_data;
  GQueue refusals;       /* char*: the latest refused local connections, newest first */
  gint64 refusal_second; /* rate limit of the journal lines */
  guint refusals_this_second;
  guint refusals_unlogged;
  GHashTable *pins;        /* "address/port" -> Pin */
  GCancellable *resolving; /* the round whose answer is wanted, or NULL */
  guint resolve_timer;
  gboolean may_own;
  gboolean applied;       /* a policy was applied once */
  GArray *sftp_only_uids; /* guint32: server mode */
  GArray *jump_uids;      /* guint32 */
  GArray *jump_rules;     /* TgFirewallJumpRule */
  GArray *known_uids;     /* guint32 */
};

typedef struct {
  TgFirewallAddress address;
  guint16 port;
  guint count; /* forwards that go there */
  char *tunnel_id;
} Pin;

static void
pin_free(gpointer data)
{
  Pin *pin = data;

  g_free(pin->tunnel_id);
  g_free(pin);
}

static void
guard_free(gpointer data)
{
  Guard *guard = data;

  g_array_unref(guard->sources);
  g_array_unref(guard->uids);
  g_free(guard->tunnel_id);
  g_free(guard->owner_name);
  g_free(guard);
}

static char *
guard_key(const TgFirewallAddress *address, guint16 port)
{
  char text[INET6_ADDRSTRLEN] = "?";

  inet_ntop(address->family, address->bytes, text, sizeof text);
  return g_strdup_printf("%s/%u", text, port);
}

TgEnforcer *
tg_enforcer_new(gboolean may_own)
{
  TgEnforcer *enforcer = g_new0(TgEnforcer, 1);

  enforcer->may_own = may_own;
  enforcer->sftp_only_uids = g_array_new(FALSE, FALSE, sizeof(guint32));
  enforcer->jump_uids = g_array_new(FALSE, FALSE, sizeof(guint32));
  enforcer->jump_rules = g_array_new(FALSE, FALSE, sizeof(TgFirewallJumpRule));
  enforcer->known_uids = g_array_new(FALSE, FALSE, sizeof(guint32));
  enforcer->exempt_uids = g_array_new(FALSE, FALSE, sizeof(guint32));
  enforcer->server_networks = g_array_new(FALSE, FALSE, sizeof(TgFirewallAddress));
  enforcer->resolved = g_array_new(FALSE, FALSE, sizeof(TgFirewallAddress));
  enforcer->server_names = g_ptr_array_new_with_free_func(g_free);
  enforcer->guards = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, guard_free);
  enforcer->pins = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, pin_free);
  enforcer->shape.ssh_ports = g_array_new(FALSE, FALSE, sizeof(TgPortRange));
  return enforcer;
}

void
tg_enforcer_free(TgEnforcer *enforcer)
{
  if (enforcer == NULL)
    return;
  if (enforcer->resolving != NULL) { /* it reports to nobody */
    g_cancellable_cancel(enforcer->resolving);
    g_clear_object(&enforcer->resolving);
  }
  if (enforcer->resolve_timer != 0)
    g_source_remove(enforcer->resolve_timer);
  tg_firewall_free(enforcer->firewall); /* the table stays in force */
  g_array_unref(enforcer->exempt_uids);
  g_array_unref(enforcer->server_networks);
  g_array_unref(enforcer->resolved);
  g_ptr_array_unref(enforcer->server_names);
  g_hash_table_unref(enforcer->guards);
  g_queue_clear_full(&enforcer->refusals, g_free);
  g_hash_table_unref(enforcer->pins);
  g_array_unref(enforcer->sftp_only_uids);
  g_array_unref(enforcer->jump_uids);
  g_array_unref(enforcer->jump_rules);
  g_array_unref(enforcer->known_uids);
  g_array_unref(enforcer->shape.ssh_ports);
  g_free(enforcer);
}

gboolean
tg_enforcer_is_enforcing(const TgEnforcer *enforcer)
{
  return enforcer->firewall != NULL;
}

guint32
tg_enforcer_socket_mark(const TgEnforcer *enforcer)
{
  /* marked whenever the table is there: pinning and a later lockdown (a
   * reload) must not find unmarked sessions */
  return enforcer->firewall != NULL ? TG_FIREWALL_DAEMON_MARK : 0;
}

/* ---- from the policy ---- */

static void
read_shape(const TgPolicy *policy, Shape *shape)
{
  const TgPolicyGlobals *globals = tg_policy_get_globals(policy);

  shape->egress_lockdown = globals->egress_lockdown;
  shape->detect_ssh_banner = globals->detect_ssh_banner;
  shape->server_mode = globals->server_mode;
  shape->listener_guard = globals->listener_guard;
  shape->connect_back_pinning = globals->connect_back_pinning;
  shape->log_rejections = globals->log_rejections;
  shape->ssh_ports = g_array_new(FALSE, FALSE, sizeof(TgPortRange));
  g_array_append_vals(shape->ssh_ports, globals->ssh_ports->data,
                      globals->ssh_ports->len);
}

static gboolean
shape_equal(const Shape *a, const Shape *b)
{
  return a->egress_lockdown == b->egress_lockdown &&
         a->detect_ssh_banner == b->detect_ssh_banner &&
         a->server_mode == b->server_mode && a->listener_guard == b->listener_guard &&
         a->connect_back_pinning == b->connect_back_pinning &&
         a->log_rejections == b->log_rejections &&
         a->ssh_ports->len == b->ssh_ports->len &&
         memcmp(a->ssh_ports->data, b->ssh_ports->data,
                a->ssh_ports->len * sizeof(TgPortRange)) == 0;
}

static int
compare_uids(gconstpointer a, gconstpointer b)
{
  guint32 x = *(const guint32 *)a, y = *(const guint32 *)b;
  return x < y ? -1 : x > y;
}

/* LockdownExempt is per user and group: every user NSS knows is asked. */
static GArray *
exempt_uids(const TgPolicy *policy)
{
  GArray *uids = g_array_new(FALSE, FALSE, sizeof(guint32));
  g_autoptr(GPtrArray) accounts = tg_accounts_list();

  for (guint i = 0; i < accounts->len; i++) {
    const TgAccount *account = g_ptr_array_index(accounts, i);
    g_autoptr(TgPolicySubject) subject = tg_policy_subject_from_uid(account->uid, NULL);
    TgPolicyOrigin origin;

    if (subject != NULL && tg_policy_is_lockdown_exempt(policy, subject, &origin))
      g_array_append_val(uids, account->uid);
  }
  g_array_sort(uids, compare_uids);
  for (guint i = 1; i < uids->len;) { /* a user listed twice */
    if (g_array_index(uids, guint32, i) == g_array_index(uids, guint32, i - 1))
      g_array_remove_index(uids, i);
    else
      i++;
  }
  return uids;
}

typedef struct {
  GArray *networks;
  GPtrArray *names;
} ServerCollector;

static void
collect_server(const TgHostPattern *pattern, gpointer user_data)
{
  ServerCollector *collector = user_data;

  if (pattern->kind == TG_HOST_PATTERN_NETWORK)
    g_array_append_val(collector->networks, pattern->network);
  else if (pattern->kind == TG_HOST_PATTERN_NAME &&
           !g_ptr_array_find_with_equal_func(collector->names, pattern->name, g_str_equal,
                                             NULL))
    g_ptr_array_add(collector->names, g_strdup(pattern->name));
  /* "*.corp", globs and "*": no address to put in a set; SshPorts covers them */
}

static gboolean
arrays_equal(GArray *a, GArray *b, gsize element_size)
{
  return a->len == b->len && memcmp(a->data, b->data, a->len * element_size) == 0;
}

/* ---- PermitServer names, resolved off the D-Bus thread ---- */

/* One round of resolution at a time: a newer round, or the enforcer going
 * away, cancels the one before, whose answer is then dropped. */

static gboolean push_servers(TgEnforcer *enforcer, GError **error);

static void
resolved(GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr(GPtrArray) answers = tg_resolve_finish(result, NULL);
  TgEnforcer *enforcer = user_data;
  g_autoptr(GArray) addresses = NULL;
  g_autoptr(GError) error = NULL;

  if (answers == NULL) /* cancelled: the enforcer may be gone */
    return;
  g_clear_object(&enforcer->resolving);
  addresses = g_array_new(FALSE, FALSE, sizeof(TgFirewallAddress));
  for (guint i = 0; i < answers->len; i++) { /* unknown today: next round */
    const TgResolved *answer = g_ptr_array_index(answers, i);

    for (guint k = 0; answer->addresses != NULL && k < answer->addresses->len; k++) {
      TgNetwork network = tg_resolve_to_network(
          &g_array_index(answer->addresses, struct sockaddr_storage, k));
      g_array_append_val(addresses, network);
    }
  }
  if (arrays_equal(addresses, enforcer->resolved, sizeof(TgFirewallAddress)))
    return;
  g_array_set_size(enforcer->resolved, 0);
  g_array_append_vals(enforcer->resolved, addresses->data, addresses->len);
  if (enforcer->firewall != NULL && !push_servers(enforcer, &error))
    tg_warning("cannot update the SSH server addresses in the firewall: %s",
               error->message);
  else if (enforcer->firewall != NULL)
    tg_message("firewall: PermitServer names resolved to %u addresses", addresses->len);
}

static void
start_resolving(TgEnforcer *enforcer)
{
  if (enforcer->resolving != NULL) { /* its answer is stale */
    g_cancellable_cancel(enforcer->resolving);
    g_clear_object(&enforcer->resolving);
  }
  if (enforcer->server_names->len == 0) {
    g_array_set_size(enforcer->resolved, 0);
    return;
  }
  enforcer->resolving = g_cancellable_new();
  tg_resolve_async((const char *const *)enforcer->server_names->pdata, NULL,
                   enforcer->server_names->len, enforcer->resolving, resolved, enforcer);
}

static gboolean
resolve_again(gpointer user_data)
{
  start_resolving(user_data);
  return G_SOURCE_CONTINUE;
}

static GArray *
all_servers(TgEnforcer *enforcer)
{
  GArray *servers = g_array_new(FALSE, FALSE, sizeof(TgFirewallAddress));

  g_array_append_vals(servers, enforcer->server_networks->data,
                      enforcer->server_networks->len);
  g_array_append_vals(servers, enforcer->resolved->data, enforcer->resolved->len);
  return servers;
}

static gboolean
push_servers(TgEnforcer *enforcer, GError **error)
{
  g_autoptr(GArray) servers = all_servers(enforcer);

  return tg_firewall_update_servers(
      enforcer->firewall, (const TgFirewallAddress *)servers->data, servers->len, error);
}

/* ---- the table ---- */

static gboolean
put_guard(TgFirewall *firewall, const Guard *guard, GError **error)
{
  TgFirewallListener listener = {
    .family = guard->family,
    .address = &guard->address,
    .port = guard->port,
    .guard_remote = guard->guard_remote,
    .sources = (const TgFirewallAddress *)guard->sources->data,
    .n_sources = guard->sources->len,
    .guard_local = guard->guard_local,
    .uids = (const guint32 *)guard->uids->data,
    .n_uids = guard->uids->len,
    .tunnel_id = guard->tunnel_id,
  };

  return tg_firewall_add_listener(firewall, &listener, error);
}

static char *
user_name(guint32 uid)
{
  char *name = tg_accounts_name_of(uid);

  return name != NULL ? name : g_strdup("?");
}

/* The kernel reset a local connection to a listener of someone else's
 * (ListenerUsers): say who, in the journal (at most
 * REFUSALS_LOGGED_PER_SECOND lines a second) and in the description. */
static void
on_refusal(const TgFirewallRefusal *refusal, gpointer user_data)
{
  TgEnforcer *enforcer = user_data;
  g_autofree char *key = guard_key(&refusal->destination, refusal->destination_port);
  g_autofree char *peer = refusal->has_uid ? user_name(refusal->uid) : g_strdup("?");
  g_autofree char *uid_text =
      refusal->has_uid ? g_strdup_printf("%u", refusal->uid) : g_strdup("unknown");
  char destination[INET6_ADDRSTRLEN] = "?";
  g_autoptr(GDateTime) now = g_date_time_new_now_local();
  g_autofree char *when = g_date_time_format(now, "%F %T");
  gint64 second = g_get_monotonic_time() / G_USEC_PER_SEC;
  const Guard *guard = g_hash_table_lookup(enforcer->guards, key);
  const char *tunnel_id, *owner;
  char *line;

  if (guard == NULL) {
    TgFirewallAddress any = { .family = refusal->family };

    g_free(key);
    key = guard_key(&any, refusal->destination_port);
    guard = g_hash_table_lookup(enforcer->guards, key);
  }
  tunnel_id = guard != NULL ? guard->tunnel_id : "-";
  owner = guard != NULL && guard->owner_name != NULL ? guard->owner_name : "?";
  inet_ntop(refusal->family, refusal->destination.bytes, destination, sizeof destination);

  line = g_strdup_printf("%s uid %s (%s) to %s port %u: tunnel %s of %s", when, uid_text,
                         peer, destination, refusal->destination_port, tunnel_id, owner);
  g_queue_push_head(&enforcer->refusals, line);
  while (enforcer->refusals.length > REFUSALS_REMEMBERED)
    g_free(g_queue_pop_tail(&enforcer->refusals));

  if (second != enforcer->refusal_second) {
    if (enforcer->refusals_unlogged > 0)
      tg_warning("firewall: %u more refused local connections were not logged (at "
                 "most %d a second)",
                 enforcer->refusals_unlogged, REFUSALS_LOGGED_PER_SECOND);
    enforcer->refusal_second = second;
    enforcer->refusals_this_second = 0;
    enforcer->refusals_unlogged = 0;
  }
  if (++enforcer->refusals_this_second > REFUSALS_LOGGED_PER_SECOND) {
    enforcer->refusals_unlogged++;
    return;
  }
  tg_log_event(G_LOG_LEVEL_MESSAGE, "CONNECTION_REFUSED", "TUNNEL_ID", tunnel_id, "USER",
               owner, "PEER_UID", uid_text, "PEER_USER", peer, "DECISION", "deny", "RULE",
               "ListenerUsers", "MESSAGE",
               "tunnel %s: the kernel reset a connection from uid %s (%s) to %s port %u: "
               "the listener is %s's (ListenerUsers)",
               tunnel_id, uid_text, peer, destination, refusal->destination_port, owner);
}

/* A new table in one transaction, with every current listener put back. */
static TgFirewall *
install(TgEnforcer *enforcer, const Shape *shape, GError **error)
{
  g_autoptr(GArray) servers = all_servers(enforcer);
  TgFirewallConfig config = {
    .egress_lockdown = shape->egress_lockdown,
    .detect_ssh_banner = shape->detect_ssh_banner,
    .ssh_ports = (const TgPortRange *)shape->ssh_ports->data,
    .n_ssh_ports = shape->ssh_ports->len,
    .ssh_servers = (const TgFirewallAddress *)servers->data,
    .n_ssh_servers = servers->len,
    .exempt_uids = (const guint32 *)enforcer->exempt_uids->data,
    .n_exempt_uids = enforcer->exempt_uids->len,
    .listener_guard = shape->listener_guard,
    .connect_back_pinning = shape->connect_back_pinning,
    .log_prefix = shape->log_rejections ? TG_FIREWALL_LOG_PREFIX : NULL,
    .ownership =
        enforcer->may_own ? TG_FIREWALL_OWNERSHIP_AUTO : TG_FIREWALL_OWNERSHIP_NEVER,
    .server_mode = shape->server_mode,
    .sftp_only_uids = (const guint32 *)enforcer->sftp_only_uids->data,
    .n_sftp_only_uids = enforcer->sftp_only_uids->len,
    .jump_uids = (const guint32 *)enforcer->jump_uids->data,
    .n_jump_uids = enforcer->jump_uids->len,
    .jump_rules = (const TgFirewallJumpRule *)enforcer->jump_rules->data,
    .n_jump_rules = enforcer->jump_rules->len,
    .known_uids = (const guint32 *)enforcer->known_uids->data,
    .n_known_uids = enforcer->known_uids->len,
  };
  g_autoptr(TgFirewall) firewall = tg_firewall_new(&config, error);
  GHashTableIter iter;
  gpointer guard;

  if (firewall == NULL)
    return NULL;
  if (shape->listener_guard) {
    g_hash_table_iter_init(&iter, enforcer->guards);
    while (g_hash_table_iter_next(&iter, NULL, &guard)) {
      if (!put_guard(firewall, guard, error))
        return NULL;
    }
  }
  if (shape->connect_back_pinning) {
    g_hash_table_iter_init(&iter, enforcer->pins);
    while (g_hash_table_iter_next(&iter, NULL, &guard)) {
      const Pin *pin = guard;
      if (!tg_firewall_add_connect_back(firewall, &pin->address, pin->port,
                                        pin->tunnel_id, error))
        return NULL;
    }
  }
  tg_firewall_set_refusal_handler(firewall, on_refusal, enforcer);
  tg_firewall_set_unknown_handler(firewall, enforcer->unknown_func,
                                  enforcer->unknown_data);
  if (!tg_firewall_watch(firewall, NULL, error))
    return NULL;
  return g_steal_pointer(&firewall);
}

gboolean
tg_enforcer_apply_policy(TgEnforcer *enforcer, const TgPolicy *policy, GError **error)
{
  Shape shape;
  gboolean wanted, any_server = FALSE;
  g_autoptr(GArray) uids = NULL;
  ServerCollector servers = { g_array_new(FALSE, FALSE, sizeof(TgFirewallAddress)),
                              g_ptr_array_new_with_free_func(g_free) };
  gboolean ok = TRUE;

  read_shape(policy, &shape);
  wanted = shape.egress_lockdown || shape.listener_guard || shape.connect_back_pinning ||
           shape.server_mode;
  if (!wanted) {
    /* ours, or one a previous daemon left (fail closed) that the policy no
     * longer wants; a table that stays is stricter, not weaker: a warning */
    if (enforcer->firewall != NULL || !enforcer->applied) {
      g_autoptr(GError) local_error = NULL;
      gboolean had = enforcer->firewall != NULL;

      g_clear_pointer(&enforcer->firewall, tg_firewall_free);
      if (!tg_firewall_remove_table(&local_error))
        tg_warning("firewall: the policy asks for no enforcement, but table inet "
                   "tunnelgate cannot be removed: %s",
                   local_error->message);
      else if (had)
        tg_message("firewall: the policy asks for no enforcement; table inet "
                   "tunnelgate removed");
    }
    enforcer->applied = TRUE;
    g_array_unref(enforcer->shape.ssh_ports);
    enforcer->shape = shape;
    shape.ssh_ports = NULL;
    goto out;
  }

  uids = exempt_uids(policy);
  tg_policy_foreach_server(policy, collect_server, &servers, &any_server);
  if (enforcer->firewall == NULL || !shape_equal(&shape, &enforcer->shape)) {
    /* a new table: the old one's owner socket must let go first (with
     * owner|persist the table stays, orphaned, until the new batch replaces
     * it in one transaction) */
    GArray *old_uids = enforcer->exempt_uids, *old_networks = enforcer->server_networks;
    TgFirewall *firewall;

    enforcer->exempt_uids = uids;
    enforcer->server_networks = servers.networks;
    g_clear_pointer(&enforcer->firewall, tg_firewall_free);
    firewall = install(enforcer, &shape, error);
    if (firewall == NULL) {
      g_autoptr(GError) again = NULL;

      /* the old table is still in force (the transaction was refused);
       * take it back under our control as it was */
      enforcer->exempt_uids = old_uids;
      enforcer->server_networks = old_networks;
      old_uids = uids;
      old_networks = servers.networks;
      if (enforcer->shape.ssh_ports->len > 0)
        enforcer->firewall = install(enforcer, &enforcer->shape, &again);
      ok = FALSE;
    } else {
      enforcer->firewall = firewall;
      g_array_unref(enforcer->shape.ssh_ports);
      enforcer->shape = shape;
      shape.ssh_ports = NULL;
      tg_message("firewall: table inet tunnelgate installed (lockdown %s, listener "
                 "guard %s, connect-back pinning %s, %s)",
                 enforcer->shape.egress_lockdown ? "on" : "off",
                 enforcer->shape.listener_guard ? "on" : "off",
                 enforcer->shape.connect_back_pinning ? "on" : "off",
                 tg_firewall_is_owner(firewall) ? "owned by the daemon"
                                                : "not owned: tamper repair only");
    }
    g_array_unref(old_uids);
    g_array_unref(old_networks);
    uids = NULL;
    servers.networks = NULL;
  } else {
    if (!arrays_equal(uids, enforcer->exempt_uids, sizeof(guint32))) {
      if (!tg_firewall_set_exempt_uids(enforcer->firewall, (const guint32 *)uids->data,
                                       uids->len, error)) {
        ok = FALSE;
        goto out;
      }
      g_array_unref(enforcer->exempt_uids);
      enforcer->exempt_uids = g_steal_pointer(&uids);
    }
    if (!arrays_equal(servers.networks, enforcer->server_networks,
                      sizeof(TgFirewallAddress))) {
      GArray *old = enforcer->server_networks;

      enforcer->server_networks = servers.networks;
      servers.networks = NULL;
      if (!push_servers(enforcer, error)) {
        servers.networks = enforcer->server_networks;
        enforcer->server_networks = old;
        ok = FALSE;
        goto out;
      }
      g_array_unref(old);
    }
  }
  if (ok) {
    enforcer->applied = TRUE;
    g_ptr_array_unref(enforcer->server_names);
    enforcer->server_names = g_steal_pointer(&servers.names);
    start_resolving(enforcer);
    if (enforcer->resolve_timer == 0)
      enforcer->resolve_timer =
          g_timeout_add_seconds(RESOLVE_INTERVAL_SECONDS, resolve_again, enforcer);
  }

out:
  if (shape.ssh_ports != NULL)
    g_array_unref(shape.ssh_ports);
  if (servers.networks != NULL)
    g_array_unref(servers.networks);
  if (servers.names != NULL)
    g_ptr_array_unref(servers.names);
  return ok;
}

/* ---- listeners ---- */

static gboolean
parse_address(const char *text, TgFirewallAddress *address)
{
  memset(address, 0, sizeof *address);
  if (inet_pton(AF_INET, text, address->bytes) == 1) {
    address->family = AF_INET;
    address->prefix = 32;
    return TRUE;
  }
  if (inet_pton(AF_INET6, text, address->bytes) == 1) {
    address->family = AF_INET6;
    address->prefix = 128;
    return TRUE;
  }
  return FALSE;
}

static gboolean
is_loopback(const TgFirewallAddress *address)
{
  static const guint8 v6_loopback[16] = { [15] = 1 };

  if (address->family == AF_INET)
    return address->bytes[0] == 127;
  return memcmp(address->bytes, v6_loopback, 16) == 0;
}

gboolean
tg_enforcer_add_listener(TgEnforcer *enforcer, const char *listen_address, guint16 port,
                         const TgListenerSources *sources, const GArray *local_uids,
                         const char *tunnel_id, const char *owner_name, GError **error)
{
  Guard *guard;
  TgFirewallAddress address;
  gboolean loopback;

  if (enforcer->firewall == NULL || !enforcer->shape.listener_guard)
    return TRUE;
  if (!parse_address(listen_address, &address)) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "Listener address %s is not an address",
                listen_address);
    return FALSE;
  }
  loopback = is_loopback(&address);
  if ((loopback || sources->any) && local_uids == NULL)
    return TRUE; /* nothing to guard: other hosts cannot or may, and so may users */

  guard = g_new0(Guard, 1);
  guard->family = address.family;
  guard->port = port;
  guard->address = address;
  guard->guard_remote = !loopback && !sources->any;
  guard->sources = g_array_new(FALSE, FALSE, sizeof(TgFirewallAddress));
  guard->guard_local = local_uids != NULL;
  guard->uids = g_array_new(FALSE, FALSE, sizeof(guint32));
  if (local_uids != NULL)
    g_array_append_vals(guard->uids, local_uids->data, local_uids->len);
  guard->tunnel_id = g_strdup(tunnel_id);
  guard->owner_name = g_strdup(owner_name);
  if (guard->guard_remote && sources->addresses != NULL) {
    for (guint i = 0; i < sources->addresses->len; i++) {
      const TgNetwork *source = &g_array_index(sources->addresses, TgNetwork, i);
      if (source->family == guard->family)
        g_array_append_val(guard->sources, *source);
    }
  }
  if (!put_guard(enforcer->firewall, guard, error)) {
    guard_free(guard);
    return FALSE;
  }
  g_hash_table_insert(enforcer->guards, guard_key(&guard->address, guard->port), guard);
  return TRUE;
}

void
tg_enforcer_remove_listener(TgEnforcer *enforcer, const char *address_text, guint16 port,
                            const char *tunnel_id)
{
  TgFirewallAddress address;
  g_autofree char *key = NULL;
  g_autoptr(GError) error = NULL;
  Guard *guard;

  if (!parse_address(address_text, &address))
    return;
  key = guard_key(&address, port);
  guard = g_hash_table_lookup(enforcer->guards, key);
  /* only the tunnel's own guard: another may hold the address and port by now */
  if (guard == NULL || g_strcmp0(guard->tunnel_id, tunnel_id) != 0)
    return;
  if (enforcer->firewall != NULL &&
      !tg_firewall_remove_listener(enforcer->firewall, guard->family, &guard->address,
                                   guard->port, &error))
    tg_warning("firewall: cannot remove the guard of %s port %u: %s", address_text,
               guard->port, error->message);
  g_hash_table_remove(enforcer->guards, key);
}

static void
replace_array(GArray **array, const void *data, gsize n)
{
  g_array_set_size(*array, 0);
  g_array_append_vals(*array, data, n);
}

gboolean
tg_enforcer_set_server_users(TgEnforcer *enforcer, const TgFirewallServerUsers *users,
                             GError **error)
{
  if (enforcer->firewall != NULL && enforcer->shape.server_mode &&
      !tg_firewall_set_server_users(enforcer->firewall, users, error))
    return FALSE;
  replace_array(&enforcer->sftp_only_uids, users->sftp_only_uids,
                users->n_sftp_only_uids);
  replace_array(&enforcer->jump_uids, users->jump_uids, users->n_jump_uids);
  replace_array(&enforcer->jump_rules, users->jump_rules, users->n_jump_rules);
  replace_array(&enforcer->known_uids, users->known_uids, users->n_known_uids);
  return TRUE;
}

gboolean
tg_enforcer_add_server_users(TgEnforcer *enforcer, const TgFirewallServerUsers *users,
                             GError **error)
{
  if (enforcer->firewall != NULL && enforcer->shape.server_mode &&
      !tg_firewall_add_server_users(enforcer->firewall, users, error))
    return FALSE;
  g_array_append_vals(enforcer->sftp_only_uids, users->sftp_only_uids,
                      users->n_sftp_only_uids);
  g_array_append_vals(enforcer->jump_uids, users->jump_uids, users->n_jump_uids);
  g_array_append_vals(enforcer->jump_rules, users->jump_rules, users->n_jump_rules);
  g_array_append_vals(enforcer->known_uids, users->known_uids, users->n_known_uids);
  return TRUE;
}

void
tg_enforcer_set_unknown_handler(TgEnforcer *enforcer, TgFirewallUnknownFunc func,
                                gpointer user_data)
{
  enforcer->unknown_func = func;
  enforcer->unknown_data = user_data;
  if (enforcer->firewall != NULL)
    tg_firewall_set_unknown_handler(enforcer->firewall, func, user_data);
}

const char *
tg_enforcer_get_log_error(const TgEnforcer *enforcer)
{
  return enforcer->firewall != NULL ? tg_firewall_get_log_error(enforcer->firewall)
                                    : NULL;
}

GArray *
tg_enforcer_read_unknown_uids(TgEnforcer *enforcer, GError **error)
{
  if (enforcer->firewall == NULL || !enforcer->shape.server_mode)
    return g_array_new(FALSE, FALSE, sizeof(guint32));
  return tg_firewall_read_unknown_uids(enforcer->firewall, error);
}

guint32
tg_enforcer_connect_back_mark(const TgEnforcer *enforcer)
{
  if (enforcer->firewall == NULL)
    return 0;
  /* without pinning, connect-back sockets pass like the daemon's others
   * (the lockdown must not refuse a sanctioned connect-back to port 22) */
  return enforcer->shape.connect_back_pinning ? TG_FIREWALL_CONNECT_BACK_MARK
                                              : TG_FIREWALL_DAEMON_MARK;
}

static gboolean
sockaddr_to_address(const struct sockaddr_storage *sockaddr, TgFirewallAddress *address,
                    guint16 *port)
{
  memset(address, 0, sizeof *address);
  if (sockaddr->ss_family == AF_INET) {
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)sockaddr;
    address->family = AF_INET;
    address->prefix = 32;
    memcpy(address->bytes, &v4->sin_addr, 4);
    *port = ntohs(v4->sin_port);
    return TRUE;
  }
  if (sockaddr->ss_family == AF_INET6) {
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sockaddr;
    address->family = AF_INET6;
    address->prefix = 128;
    memcpy(address->bytes, &v6->sin6_addr, 16);
    *port = ntohs(v6->sin6_port);
    return TRUE;
  }
  return FALSE;
}

static char *
pin_key(const TgFirewallAddress *address, guint16 port)
{
  char text[INET6_ADDRSTRLEN] = "";

  inet_ntop(address->family, address->bytes, text, sizeof text);
  return g_strdup_printf("%s/%u", text, port);
}

gboolean
tg_enforcer_add_connect_back(TgEnforcer *enforcer,
                             const struct sockaddr_storage *sockaddr,
                             const char *tunnel_id, GError **error)
{
  TgFirewallAddress address;
  guint16 port;
  g_autofree char *key = NULL;
  Pin *pin;

  if (enforcer->firewall == NULL || !enforcer->shape.connect_back_pinning)
    return TRUE;
  if (!sockaddr_to_address(sockaddr, &address, &port)) {
    g_set_error_literal(error, TG_ERROR, TG_ERROR_FAILED,
                        "A connect-back destination is neither IPv4 nor IPv6");
    return FALSE;
  }
  key = pin_key(&address, port);
  pin = g_hash_table_lookup(enforcer->pins, key);
  if (pin != NULL) {
    pin->count++;
    return TRUE;
  }
  if (!tg_firewall_add_connect_back(enforcer->firewall, &address, port, tunnel_id, error))
    return FALSE;
  pin = g_new0(Pin, 1);
  pin->address = address;
  pin->port = port;
  pin->count = 1;
  pin->tunnel_id = g_strdup(tunnel_id);
  g_hash_table_insert(enforcer->pins, g_steal_pointer(&key), pin);
  return TRUE;
}

void
tg_enforcer_remove_connect_back(TgEnforcer *enforcer,
                                const struct sockaddr_storage *sockaddr)
{
  TgFirewallAddress address;
  guint16 port;
  g_autofree char *key = NULL;
  g_autoptr(GError) error = NULL;
  Pin *pin;

  if (!sockaddr_to_address(sockaddr, &address, &port))
    return;
  key = pin_key(&address, port);
  pin = g_hash_table_lookup(enforcer->pins, key);
  if (pin == NULL || --pin->count > 0)
    return;
  if (enforcer->firewall != NULL &&
      !tg_firewall_remove_connect_back(enforcer->firewall, &address, port, &error))
    tg_warning("firewall: cannot remove the connect-back element %s: %s", key,
               error->message);
  g_hash_table_remove(enforcer->pins, key);
}

char *
tg_enforcer_describe(TgEnforcer *enforcer)
{
  if (enforcer->firewall == NULL)
    return g_strdup("The firewall is not in force: the policy sets EgressLockdown, "
                    "ListenerGuard and ConnectBackPinning to no.\n");
  GString *out = g_string_new(NULL);
  g_autofree char *table = tg_firewall_describe(enforcer->firewall);

  g_string_append(out, table);
  if (enforcer->refusals.length > 0)
    g_string_append(out, "refused local connections (ListenerUsers), newest first:\n");
  for (GList *l = enforcer->refusals.head; l != NULL; l = l->next)
    g_string_append_printf(out, "  %s\n", (const char *)l->data);
  return g_string_free(out, FALSE);
}
