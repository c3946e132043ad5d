/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Policy evaluation: which value applies to whom, and the decisions that
 * name the rule that made them. Pure and read-only: a loaded TgPolicy is
 * shared by threads without locks. */
#include "policy.h"

#include <string.h>

#include "config-tokenizer.h"
#include "log.h"
#include "policy-model.h"
#include "tg-error.h"

static const char *
keyword_name(const TgSetting *setting)
{
  return tg_policy_keywords[setting->keyword].name;
}

static const char *
setting_word(const TgSetting *setting)
{
  return tg_policy_keywords[setting->keyword].words[setting->word];
}

static void
fill_origin(TgPolicyOrigin *origin, const TgSetting *setting)
{
  if (origin == NULL)
    return;
  origin->keyword = keyword_name(setting);
  origin->file = setting->file;
  origin->line = setting->line;
}

/* ---- Decisions ---------------------------------------------------------- */

void
tg_policy_log_decision(const TgPolicySubject *subject, const char *tunnel_id,
                       const char *what, const TgPolicyDecision *decision)
{
  g_autofree char *uid = g_strdup_printf("%u", (unsigned)subject->uid);
  g_autofree char *rule =
      g_strdup_printf("%s:%u %s", decision->file, decision->line, decision->keyword);

  tg_log_event(G_LOG_LEVEL_MESSAGE, "POLICY_DECISION", "USER", subject->user, "UID", uid,
               "TUNNEL_ID", tunnel_id != NULL ? tunnel_id : "", "FORWARD", what,
               "DECISION", decision->allowed ? "allow" : "deny", "RULE", rule, "MESSAGE",
               "policy %s %s for %s (uid %s): %s",
               decision->allowed ? "allows" : "denies", what, subject->user, uid,
               decision->reason);
}

void
tg_policy_decision_free(TgPolicyDecision *decision)
{
  if (decision == NULL)
    return;
  g_free(decision->file);
  g_free(decision->reason);
  g_free(decision);
}

gboolean
tg_policy_decision_to_error(const TgPolicyDecision *decision, GError **error)
{
  gboolean is_limit;

  if (decision->allowed)
    return TRUE;
  is_limit = (g_str_has_prefix(decision->keyword, "Max") ||
              g_str_has_prefix(decision->keyword, "DaemonMax")) &&
             !g_str_equal(decision->keyword, "MaxLifetime");
  g_set_error_literal(error, TG_ERROR,
                      is_limit ? TG_ERROR_LIMIT_EXCEEDED : TG_ERROR_POLICY_DENIED,
                      decision->reason);
  return FALSE;
}

static const char *
verdict(gboolean allowed)
{
  return allowed ? "allows" : "does not allow";
}

static TgPolicyDecision *decision_new(gboolean allowed, const TgSetting *setting,
                                      guint line, const char *value, const char *format,
                                      ...) G_GNUC_PRINTF(5, 6);

/* "<Keyword>[ <value>] at <file:line> <what follows>". */
static TgPolicyDecision *
decision_new(gboolean allowed, const TgSetting *setting, guint line, const char *value,
             const char *format, ...)
{
  TgPolicyDecision *decision = g_new0(TgPolicyDecision, 1);
  g_autofree char *origin = line == 0 ? g_strdup(TG_POLICY_DEFAULT_ORIGIN)
                                      : g_strdup_printf("%s:%u", setting->file, line);
  g_autofree char *tail = NULL;
  va_list args;

  va_start(args, format);
  tail = g_strdup_vprintf(format, args);
  va_end(args);
  decision->allowed = allowed;
  decision->keyword = keyword_name(setting);
  decision->file = g_strdup(setting->file);
  decision->line = line;
  decision->reason =
      g_strdup_printf("%s%s%s at %s %s", decision->keyword, value != NULL ? " " : "",
                      value != NULL ? value : "", origin, tail);
  return decision;
}

/* "db.corp:5432", "[2001:db8::1]:443"; hosts from SOCKS requests may hold
 * anything, so they are escaped for logs and D-Bus messages. */
static char *
host_port_text(const char *host, guint16 port)
{
  g_autofree char *shown = tg_text_printable(host, TG_HOST_NAME_MAX + 1);

  if (strchr(shown, ':') != NULL)
    return g_strdup_printf("[%s]:%u", shown, port);
  return g_strdup_printf("%s:%u", shown, port);
}

static TgPolicyDecision *
check_host_list(const TgSetting *setting, const TgHostQuery *query, guint16 port,
                const char *object)
{
  const TgHostList *hosts = &setting->hosts;
  const TgHostEntry *entry;

  if (hosts->any)
    return decision_new(TRUE, setting, setting->line, "any", "allows %s", object);
  if (hosts->none)
    return decision_new(FALSE, setting, setting->line, "none", "does not allow %s",
                        object);
  entry = tg_host_index_lookup(hosts->index, query, port);
  if (entry != NULL)
    return decision_new(TRUE, setting, entry->line, NULL, "allows %s", object);
  return decision_new(FALSE, setting, setting->line, NULL, "does not allow %s", object);
}

static TgPolicyDecision *
check_destination(const TgPolicy *policy, const TgPolicySubject *subject,
                  TgPolicyKeyword keyword, const char *host, guint16 port)
{
  g_autofree char *object = host_port_text(host, port);
  TgHostQuery query;

  tg_host_query_init(&query, host);
  return check_host_list(tg_policy_effective(policy, subject, keyword), &query, port,
                         object);
}

TgPolicyDecision *
tg_policy_check_server(const TgPolicy *policy, const TgPolicySubject *subject,
                       const char *host, guint16 port)
{
  g_return_val_if_fail(policy != NULL && host != NULL, NULL);
  return check_destination(policy, subject, TG_KW_PERMIT_SERVER, host, port);
}

TgPolicyDecision *
tg_policy_check_socks_destination(const TgPolicy *policy, const TgPolicySubject *subject,
                                  const char *host, guint16 port)
{
  g_return_val_if_fail(policy != NULL && host != NULL, NULL);
  return check_destination(policy, subject, TG_KW_PERMIT_OPEN, host, port);
}

TgPolicyDecision *
tg_policy_check_remote_open(const TgPolicy *policy, const TgPolicySubject *subject,
                            const char *host, guint16 port)
{
  g_return_val_if_fail(policy != NULL && host != NULL, NULL);
  return check_destination(policy, subject, TG_KW_PERMIT_REMOTE_OPEN, host, port);
}

TgPolicyDecision *
tg_policy_check_server_permit_open(const TgPolicy *policy, const TgPolicySubject *subject,
                                   const char *host, guint16 port)
{
  g_return_val_if_fail(policy != NULL && host != NULL, NULL);
  return check_destination(policy, subject, TG_KW_SERVER_PERMIT_OPEN, host, port);
}

/* ---- Forwards ----------------------------------------------------------- */

/* Replaces *current with @next; TRUE when @next allows. The chain of
 * checks ends at the first denial, or names the last rule that allowed. */
static gboolean
then(TgPolicyDecision **current, TgPolicyDecision *next)
{
  tg_policy_decision_free(*current);
  *current = next;
  return next->allowed;
}

static gboolean
forwarding_allows(guint word, gboolean remote)
{
  switch ((TgForwardingWord)word) {
  case TG_FORWARDING_YES:
  case TG_FORWARDING_ALL:
    return TRUE;
  case TG_FORWARDING_LOCAL:
    return !remote;
  case TG_FORWARDING_REMOTE:
    return remote;
  case TG_FORWARDING_NO:
    break;
  }
  return FALSE;
}

static TgPolicyDecision *
check_forwarding(const TgPolicy *policy, const TgPolicySubject *subject,
                 TgPolicyKeyword keyword, const TgForward *forward)
{
  const TgSetting *setting = tg_policy_effective(policy, subject, keyword);
  gboolean allowed = forwarding_allows(setting->word, forward->kind == TG_FORWARD_REMOTE);

  return decision_new(allowed, setting, setting->line, setting_word(setting), "%s %s",
                      verdict(allowed), forward->spec);
}

/* A TCP end needs AllowTcpForwarding, a Unix socket end
 * AllowStreamLocalForwarding; a mixed forward needs both. */
static gboolean
check_kind(const TgPolicy *policy, const TgPolicySubject *subject,
           const TgForward *forward, TgPolicyDecision **decision)
{
  gboolean has_connect = forward->kind != TG_FORWARD_DYNAMIC && !forward->remote_dynamic;
  gboolean listen_socket = forward->listen.path != NULL;
  gboolean connect_socket = has_connect && forward->connect.path != NULL;
  gboolean has_tcp = !listen_socket || (has_connect && !connect_socket);

  if (has_tcp && !then(decision, check_forwarding(policy, subject,
                                                  TG_KW_ALLOW_TCP_FORWARDING, forward)))
    return FALSE;
  if ((listen_socket || connect_socket) &&
      !then(decision, check_forwarding(policy, subject,
                                       TG_KW_ALLOW_STREAM_LOCAL_FORWARDING, forward)))
    return FALSE;
  return TRUE;
}

static TgPolicyDecision *
check_dynamic(const TgPolicy *policy, const TgPolicySubject *subject,
              const TgForward *forward)
{
  const TgSetting *setting =
      tg_policy_effective(policy, subject, TG_KW_ALLOW_DYNAMIC_FORWARDING);
  gboolean allowed = setting->word != 0;

  return decision_new(allowed, setting, setting->line, setting_word(setting), "%s %s",
                      verdict(allowed), forward->spec);
}

/* The daemon's own listeners (L, D). */
static TgPolicyDecision *
check_gateway_ports(const TgPolicy *policy, const TgPolicySubject *subject,
                    const TgForward *forward)
{
  const TgSetting *setting = tg_policy_effective(policy, subject, TG_KW_GATEWAY_PORTS);
  gboolean allowed = setting->word != TG_GATEWAY_PORTS_NO ||
                     tg_forward_listens_on_loopback_only(forward);

  return decision_new(allowed, setting, setting->line, setting_word(setting), "%s %s%s",
                      verdict(allowed), forward->spec,
                      allowed ? "" : " (a listener beyond loopback)");
}

/* The listener an R forward asks the server for. Without a bind address
 * ssh(1) asks for "localhost"; "*" and "" ask for every address, which
 * only a PermitListen entry without host (or with "*") allows. */
static TgPolicyDecision *
check_listen(const TgPolicy *policy, const TgPolicySubject *subject,
             const TgForward *forward)
{
  const char *host = forward->listen.host != NULL ? forward->listen.host : "localhost";
  gboolean all = *host == '\0' || g_str_equal(host, "*");
  g_autofree char *object = host_port_text(all ? "*" : host, forward->listen.port);
  TgHostQuery query;

  if (all)
    tg_host_query_init_all_addresses(&query);
  else
    tg_host_query_init(&query, host);
  return check_host_list(tg_policy_effective(policy, subject, TG_KW_PERMIT_LISTEN),
                         &query, forward->listen.port, object);
}

static TgPolicyDecision *
check_local(const TgPolicy *policy, const TgPolicySubject *subject,
            const TgForward *forward)
{
  TgPolicyDecision *decision = NULL;

  if (!check_kind(policy, subject, forward, &decision))
    return decision;
  if (forward->listen.path == NULL &&
      !then(&decision, check_gateway_ports(policy, subject, forward)))
    return decision;
  if (forward->connect.path == NULL)
    then(&decision, check_destination(policy, subject, TG_KW_PERMIT_OPEN,
                                      forward->connect.host, forward->connect.port));
  return decision;
}

static TgPolicyDecision *
check_remote(const TgPolicy *policy, const TgPolicySubject *subject,
             const TgForward *forward)
{
  TgPolicyDecision *decision = NULL;

  if (!check_kind(policy, subject, forward, &decision))
    return decision;
  if (forward->remote_dynamic &&
      !then(&decision, check_dynamic(policy, subject, forward)))
    return decision;
  if (forward->listen.path == NULL &&
      !then(&decision, check_listen(policy, subject, forward)))
    return decision;
  if (!forward->remote_dynamic && forward->connect.path == NULL)
    then(&decision, check_destination(policy, subject, TG_KW_PERMIT_REMOTE_OPEN,
                                      forward->connect.host, forward->connect.port));
  return decision;
}

static TgPolicyDecision *
check_dynamic_forward(const TgPolicy *policy, const TgPolicySubject *subject,
                      const TgForward *forward)
{
  TgPolicyDecision *decision = NULL;

  if (!then(&decision, check_dynamic(policy, subject, forward)) ||
      !check_kind(policy, subject, forward, &decision))
    return decision;
  then(&decision, check_gateway_ports(policy, subject, forward));
  return decision;
}

TgPolicyDecision *
tg_policy_check_forward(const TgPolicy *policy, const TgPolicySubject *subject,
                        const TgForward *forward)
{
  g_return_val_if_fail(policy != NULL && forward != NULL, NULL);

  switch (forward->kind) {
  case TG_FORWARD_LOCAL:
    return check_local(policy, subject, forward);
  case TG_FORWARD_REMOTE:
    return check_remote(policy, subject, forward);
  case TG_FORWARD_DYNAMIC:
    return check_dynamic_forward(policy, subject, forward);
  }
  g_return_val_if_reached(NULL);
}

/* ---- Values ------------------------------------------------------------- */

TgGatewayPorts
tg_policy_get_gateway_ports(const TgPolicy *policy, const TgPolicySubject *subject,
                            TgPolicyOrigin *origin)
{
  const TgSetting *setting = tg_policy_effective(policy, subject, TG_KW_GATEWAY_PORTS);

  fill_origin(origin, setting);
  return (TgGatewayPorts)setting->word;
}

gboolean
tg_policy_forward_listens_on_all_addresses(const TgPolicy *policy,
                                           const TgPolicySubject *subject,
                                           const TgForward *forward)
{
  g_return_val_if_fail(policy != NULL && forward != NULL, FALSE);

  return forward->kind != TG_FORWARD_REMOTE && forward->listen.path == NULL &&
         forward->listen.host == NULL &&
         tg_policy_get_gateway_ports(policy, subject, NULL) == TG_GATEWAY_PORTS_YES;
}

static const TgPolicyKeyword limit_keywords[] = {
  [TG_POLICY_MAX_TUNNELS] = TG_KW_MAX_TUNNELS,
  [TG_POLICY_MAX_CONNECTIONS] = TG_KW_MAX_CONNECTIONS,
  [TG_POLICY_MAX_LIFETIME] = TG_KW_MAX_LIFETIME,
  [TG_POLICY_IDLE_TIMEOUT] = TG_KW_IDLE_TIMEOUT,
  [TG_POLICY_MAX_LISTENERS] = TG_KW_MAX_LISTENERS,
  [TG_POLICY_MAX_BUFFERED] = TG_KW_MAX_BUFFERED,
  [TG_POLICY_MAX_PENDING_CALLS] = TG_KW_MAX_PENDING_CALLS,
  [TG_POLICY_DAEMON_MAX_TUNNELS] = TG_KW_DAEMON_MAX_TUNNELS,
  [TG_POLICY_DAEMON_MAX_LISTENERS] = TG_KW_DAEMON_MAX_LISTENERS,
  [TG_POLICY_DAEMON_MAX_CONNECTIONS] = TG_KW_DAEMON_MAX_CONNECTIONS,
  [TG_POLICY_DAEMON_MAX_BUFFERED] = TG_KW_DAEMON_MAX_BUFFERED,
  [TG_POLICY_DAEMON_MAX_PENDING_CALLS] = TG_KW_DAEMON_MAX_PENDING_CALLS,
  [TG_POLICY_MAX_RECONNECT_ATTEMPTS] = TG_KW_MAX_RECONNECT_ATTEMPTS,
};

/* What a count limit counts, for its messages. */
static const char *const limit_nouns[] = {
  [TG_POLICY_MAX_TUNNELS] = "tunnel",
  [TG_POLICY_MAX_CONNECTIONS] = "connection",
  [TG_POLICY_MAX_LISTENERS] = "listener",
  [TG_POLICY_MAX_BUFFERED] = "byte of buffers",
  [TG_POLICY_MAX_PENDING_CALLS] = "pending call",
  [TG_POLICY_DAEMON_MAX_TUNNELS] = "tunnel in the daemon",
  [TG_POLICY_DAEMON_MAX_LISTENERS] = "listener in the daemon",
  [TG_POLICY_DAEMON_MAX_CONNECTIONS] = "connection in the daemon",
  [TG_POLICY_DAEMON_MAX_BUFFERED] = "byte of buffers in the daemon",
  [TG_POLICY_DAEMON_MAX_PENDING_CALLS] = "pending call in the daemon",
};

void
tg_policy_get_limit(const TgPolicy *policy, const TgPolicySubject *subject,
                    TgPolicyLimitKind kind, TgPolicyLimit *limit)
{
  const TgSetting *setting;

  g_return_if_fail(kind < G_N_ELEMENTS(limit_keywords));
  setting = tg_policy_effective(policy, subject, limit_keywords[kind]);
  limit->limited = !setting->none;
  limit->value = setting->none ? 0 : setting->number;
  fill_origin(&limit->origin, setting);
}

TgPolicyDecision *
tg_policy_check_count_limit(const TgPolicy *policy, const TgPolicySubject *subject,
                            TgPolicyLimitKind kind, guint64 in_use)
{
  return tg_policy_check_amount_limit(policy, subject, kind, in_use, 1);
}

TgPolicyDecision *
tg_policy_check_amount_limit(const TgPolicy *policy, const TgPolicySubject *subject,
                             TgPolicyLimitKind kind, guint64 in_use, guint64 more)
{
  const TgSetting *setting;
  g_autofree char *value = NULL;
  gboolean allowed;

  g_return_val_if_fail(kind < G_N_ELEMENTS(limit_nouns) && limit_nouns[kind] != NULL,
                       NULL);
  setting = tg_policy_effective(policy, subject, limit_keywords[kind]);
  value = setting->none ? g_strdup("none")
                        : g_strdup_printf("%" G_GUINT64_FORMAT, setting->number);
  allowed =
      setting->none || (in_use <= setting->number && more <= setting->number - in_use);
  if (more == 1)
    return decision_new(allowed, setting, setting->line, value,
                        "%s another %s (%" G_GUINT64_FORMAT " in use)", verdict(allowed),
                        limit_nouns[kind], in_use);
  return decision_new(allowed, setting, setting->line, value,
                      "%s %" G_GUINT64_FORMAT " more of %ss (%" G_GUINT64_FORMAT
                      " in use)",
                      verdict(allowed), more, limit_nouns[kind], in_use);
}

TgPolicyDecision *
tg_policy_limit_reached(const TgPolicy *policy, const TgPolicySubject *subject,
                        TgPolicyLimitKind kind)
{
  const TgSetting *setting;
  g_autofree char *value = NULL;

  g_return_val_if_fail(kind == TG_POLICY_MAX_LIFETIME || kind == TG_POLICY_IDLE_TIMEOUT,
                       NULL);
  setting = tg_policy_effective(policy, subject, limit_keywords[kind]);
  value = g_strdup_printf("%" G_GUINT64_FORMAT "s", setting->number);
  return decision_new(FALSE, setting, setting->line, value, "ends the tunnel");
}

TgPolicyDecision *
tg_policy_check_host_key(const TgPolicy *policy, const TgPolicySubject *subject,
                         gboolean pinned)
{
  const TgSetting *setting = tg_policy_effective(policy, subject, TG_KW_HOST_KEY_POLICY);

  switch ((TgHostKeyPolicy)setting->word) {
  case TG_HOST_KEY_POLICY_PINNED_ONLY:
    return decision_new(pinned, setting, setting->line, setting_word(setting),
                        pinned ? "allows the pinned host key"
                               : "requires the host-key option");
  case TG_HOST_KEY_POLICY_STRICT:
    return decision_new(TRUE, setting, setting->line, setting_word(setting),
                        "allows a host key in known_hosts only");
  case TG_HOST_KEY_POLICY_KNOWN_OR_PINNED:
  default:
    return decision_new(TRUE, setting, setting->line, setting_word(setting),
                        "allows a host key in known_hosts or pinned");
  }
}

TgHostKeyPolicy
tg_policy_get_host_key_policy(const TgPolicy *policy, const TgPolicySubject *subject,
                              TgPolicyOrigin *origin)
{
  const TgSetting *setting = tg_policy_effective(policy, subject, TG_KW_HOST_KEY_POLICY);

  fill_origin(origin, setting);
  return (TgHostKeyPolicy)setting->word;
}

void
tg_policy_get_listener_sources(const TgPolicy *policy, const TgPolicySubject *subject,
                               TgListenerSources *sources)
{
  const TgSetting *setting;

  g_return_if_fail(policy != NULL && sources != NULL);

  setting = tg_policy_effective(policy, subject, TG_KW_LISTENER_SOURCES);
  sources->any = setting->any;
  sources->addresses = setting->any ? NULL : setting->addresses;
  fill_origin(&sources->origin, setting);
}

void
tg_policy_get_listener_users(const TgPolicy *policy, const TgPolicySubject *subject,
                             TgListenerUsers *users)
{
  const TgSetting *setting;

  g_return_if_fail(policy != NULL && users != NULL);

  setting = tg_policy_effective(policy, subject, TG_KW_LISTENER_USERS);
  users->any = setting->any;
  users->principals = setting->any ? NULL : setting->principals;
  fill_origin(&users->origin, setting);
}

/* Calls @func for each entry of @setting; TRUE when it allows any server. */
static gboolean
foreach_server_entry(const TgSetting *setting,
                     void (*func)(const TgHostPattern *pattern, gpointer user_data),
                     gpointer user_data)
{
  const TgHostList *hosts = &setting->hosts;
  gboolean any = hosts->any;

  for (guint i = 0; i < hosts->entries->len; i++) {
    const TgHostEntry *entry = g_ptr_array_index(hosts->entries, i);

    any |= entry->pattern->kind == TG_HOST_PATTERN_ANY;
    func(entry->pattern, user_data);
  }
  return any;
}

/* The settings tg_policy_effective() can return for someone: every Match
 * block's, the first global one, and the default only when no global line
 * sets PermitServer. */
void
tg_policy_foreach_server(const TgPolicy *policy,
                         void (*func)(const TgHostPattern *pattern, gpointer user_data),
                         gpointer user_data, gboolean *any)
{
  const TgSetting *last;
  gboolean found_any = FALSE;

  g_return_if_fail(policy != NULL && func != NULL);

  for (guint i = 0; i < policy->match_blocks->len; i++) {
    const TgBlock *block = g_ptr_array_index(policy->match_blocks, i);

    if (block->settings[TG_KW_PERMIT_SERVER] != NULL)
      found_any |=
          foreach_server_entry(block->settings[TG_KW_PERMIT_SERVER], func, user_data);
  }
  last = policy->global[TG_KW_PERMIT_SERVER] != NULL
             ? policy->global[TG_KW_PERMIT_SERVER]
             : policy->defaults[TG_KW_PERMIT_SERVER];
  found_any |= foreach_server_entry(last, func, user_data);
  if (any != NULL)
    *any = found_any;
}

const TgPolicyGlobals *
tg_policy_get_globals(const TgPolicy *policy)
{
  return &policy->globals;
}

static gboolean
get_flag(const TgPolicy *policy, const TgPolicySubject *subject, TgPolicyKeyword keyword,
         TgPolicyOrigin *origin)
{
  const TgSetting *setting = tg_policy_effective(policy, subject, keyword);

  fill_origin(origin, setting);
  return setting->word != 0;
}

gboolean
tg_policy_is_lockdown_exempt(const TgPolicy *policy, const TgPolicySubject *subject,
                             TgPolicyOrigin *origin)
{
  return get_flag(policy, subject, TG_KW_LOCKDOWN_EXEMPT, origin);
}

gboolean
tg_policy_is_sftp_only(const TgPolicy *policy, const TgPolicySubject *subject,
                       TgPolicyOrigin *origin)
{
  return get_flag(policy, subject, TG_KW_SFTP_ONLY, origin);
}

void
tg_policy_get_server_permit_open(const TgPolicy *policy, const TgPolicySubject *subject,
                                 TgPolicyHostList *list)
{
  const TgSetting *setting;
  const TgHostList *hosts;

  g_return_if_fail(policy != NULL && list != NULL);

  setting = tg_policy_effective(policy, subject, TG_KW_SERVER_PERMIT_OPEN);
  hosts = &setting->hosts;
  list->any = hosts->any;
  list->none = hosts->none;
  list->entries = hosts->any || hosts->none ? NULL : hosts->patterns;
  fill_origin(&list->origin, setting);
}

/* ---- The effective policy ----------------------------------------------- */

static void
append_hosts(GString *out, const TgSetting *setting)
{
  const TgHostList *hosts = &setting->hosts;
  TgPortRule rule = tg_policy_keywords[setting->keyword].port_rule;

  if (hosts->any || hosts->none) {
    g_string_append(out, hosts->any ? "any" : "none");
    return;
  }
  for (guint i = 0; i < hosts->entries->len; i++) {
    const TgHostEntry *entry = g_ptr_array_index(hosts->entries, i);
    g_autofree char *text = tg_host_pattern_to_string(entry->pattern, rule);

    g_string_append_printf(out, "%s%s", i > 0 ? " " : "", text);
  }
}

static void
append_addresses(GString *out, const TgSetting *setting)
{
  if (setting->any || setting->none) {
    g_string_append(out, setting->any ? "any" : "none");
    return;
  }
  for (guint i = 0; i < setting->addresses->len; i++) {
    TgHostPattern pattern = { TG_HOST_PATTERN_NETWORK,
                              NULL,
                              g_array_index(setting->addresses, TgNetwork, i),
                              { 0, G_MAXUINT16 } };
    g_autofree char *text = tg_host_pattern_to_string(&pattern, TG_PORT_OPTIONAL);

    g_string_append_printf(out, "%s%s", i > 0 ? " " : "", text);
  }
}

/* The largest unit that divides the size: 1G, 640K, 1000. */
static void
append_size(GString *out, guint64 bytes)
{
  static const char units[] = "KMGT";
  int unit = -1;

  while (unit < 3 && bytes != 0 && bytes % 1024 == 0 && bytes / 1024 > 0) {
    bytes /= 1024;
    unit++;
  }
  g_string_append_printf(out, "%" G_GUINT64_FORMAT, bytes);
  if (unit >= 0)
    g_string_append_c(out, units[unit]);
}

/* Paths are the only values that may need quotes to parse back. */
static void
append_quoted(GString *out, const char *text)
{
  if (strpbrk(text, " \t\"#\\") == NULL) {
    g_string_append(out, text);
    return;
  }
  g_string_append_c(out, '"');
  for (const char *p = text; *p != '\0'; p++) {
    if (*p == '"' || *p == '\\')
      g_string_append_c(out, '\\');
    g_string_append_c(out, *p);
  }
  g_string_append_c(out, '"');
}

static void
append_value(GString *out, const TgSetting *setting)
{
  switch (tg_policy_keywords[setting->keyword].type) {
  case TG_VALUE_WORD:
    g_string_append(out, setting_word(setting));
    break;
  case TG_VALUE_HOSTS:
    append_hosts(out, setting);
    break;
  case TG_VALUE_SIZE:
    if (setting->none)
      g_string_append(out, "none");
    else
      append_size(out, setting->number);
    break;
  case TG_VALUE_COUNT:
  case TG_VALUE_TIME:
    if (setting->none)
      g_string_append(out, "none");
    else
      g_string_append_printf(out, "%" G_GUINT64_FORMAT, setting->number);
    break;
  case TG_VALUE_PORTS:
    for (guint i = 0; i < setting->ports->len; i++) {
      if (i > 0)
        g_string_append_c(out, ',');
      tg_port_range_append(out, &g_array_index(setting->ports, TgPortRange, i));
    }
    break;
  case TG_VALUE_PATH:
    append_quoted(out, setting->path);
    break;
  case TG_VALUE_ADDRESSES:
    append_addresses(out, setting);
    break;
  case TG_VALUE_PRINCIPALS:
    g_string_append(out, setting->any ? "any" : "owner");
    for (guint i = 0; !setting->any && i < setting->principals->len; i++)
      g_string_append_printf(out, " %s",
                             (const char *)g_ptr_array_index(setting->principals, i));
    break;
  }
}

char *
tg_policy_dump_effective(const TgPolicy *policy, const TgPolicySubject *subject,
                         gboolean with_origins)
{
  GString *out = g_string_new(NULL);

  g_return_val_if_fail(policy != NULL, NULL);

  for (guint k = 0; k < TG_KW_COUNT; k++) {
    const TgSetting *setting = tg_policy_effective(policy, subject, k);
    g_autofree char *name = g_ascii_strdown(tg_policy_keywords[k].name, -1);

    g_string_append_printf(out, "%s ", name);
    append_value(out, setting);
    if (with_origins && setting->line == 0)
      g_string_append(out, "  # " TG_POLICY_DEFAULT_ORIGIN);
    else if (with_origins)
      g_string_append_printf(out, "  # %s:%u", setting->file, setting->line);
    g_string_append_c(out, '\n');
  }
  return g_string_free(out, FALSE);
}
