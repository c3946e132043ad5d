/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The policy model's life cycle, used by both the parser (policy-parser.c,
 * which builds a TgPolicy) and the evaluator (policy.c, which answers from
 * it): the keyword table, settings and blocks and how they are freed, the
 * reference count, and which setting applies to a subject. Pure. */
#include "policy-model.h"

#include <string.h>
#include <sys/socket.h>

/* ---- Keywords ---------------------------------------------------------- */

static const char *const forwarding_words[] = { "yes",   "all",    "no",
                                                "local", "remote", NULL };
static const char *const yes_no_words[] = { "no", "yes", NULL };
static const char *const gateway_ports_words[] = { "no", "yes", "clientspecified", NULL };
static const char *const host_key_policy_words[] = { "known-or-pinned", "strict",
                                                     "pinned-only", NULL };

G_STATIC_ASSERT(TG_GATEWAY_PORTS_CLIENT_SPECIFIED == 2);
G_STATIC_ASSERT(TG_HOST_KEY_POLICY_PINNED_ONLY == 2);

#define WORD(name, words, default_text, flags)                                           \
  {                                                                                      \
    name, TG_VALUE_WORD, words, 0, default_text, flags                                   \
  }
#define HOSTS(name, rule, flags)                                                         \
  {                                                                                      \
    name, TG_VALUE_HOSTS, NULL, rule, "any", (flags) | TG_KEYWORD_LIST                   \
  }
#define OTHER(name, type, default_text, flags)                                           \
  {                                                                                      \
    name, type, NULL, 0, default_text, flags                                             \
  }

const TgKeywordInfo tg_policy_keywords[TG_KW_COUNT] = {
  [TG_KW_ALLOW_TCP_FORWARDING] = WORD("AllowTcpForwarding", forwarding_words, "yes", 0),
  [TG_KW_ALLOW_STREAM_LOCAL_FORWARDING] =
      WORD("AllowStreamLocalForwarding", forwarding_words, "yes", 0),
  [TG_KW_ALLOW_DYNAMIC_FORWARDING] =
      WORD("AllowDynamicForwarding", yes_no_words, "yes", 0),
  [TG_KW_GATEWAY_PORTS] = WORD("GatewayPorts", gateway_ports_words, "no", 0),
  [TG_KW_LISTENER_SOURCES] =
      OTHER("ListenerSources", TG_VALUE_ADDRESSES, "any", TG_KEYWORD_LIST),
  [TG_KW_LISTENER_USERS] =
      OTHER("ListenerUsers", TG_VALUE_PRINCIPALS, "owner", TG_KEYWORD_LIST),
  [TG_KW_PERMIT_OPEN] = HOSTS("PermitOpen", TG_PORT_REQUIRED, 0),
  [TG_KW_PERMIT_REMOTE_OPEN] = HOSTS("PermitRemoteOpen", TG_PORT_REQUIRED, 0),
  [TG_KW_PERMIT_LISTEN] = HOSTS("PermitListen", TG_PORT_LISTEN, 0),
  [TG_KW_PERMIT_SERVER] = HOSTS("PermitServer", TG_PORT_OPTIONAL, 0),
  /* finite by default (doc/policy.md, "Limits") */
  [TG_KW_MAX_TUNNELS] = OTHER("MaxTunnels", TG_VALUE_COUNT, "64", 0),
  [TG_KW_MAX_CONNECTIONS] = OTHER("MaxConnections", TG_VALUE_COUNT, "2048", 0),
  [TG_KW_MAX_LISTENERS] = OTHER("MaxListeners", TG_VALUE_COUNT, "256", 0),
  [TG_KW_MAX_BUFFERED] = OTHER("MaxBuffered", TG_VALUE_SIZE, "1G", 0),
  [TG_KW_MAX_PENDING_CALLS] = OTHER("MaxPendingCalls", TG_VALUE_COUNT, "64", 0),
  [TG_KW_DAEMON_MAX_TUNNELS] =
      OTHER("DaemonMaxTunnels", TG_VALUE_COUNT, "4096", TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_DAEMON_MAX_LISTENERS] =
      OTHER("DaemonMaxListeners", TG_VALUE_COUNT, "8192", TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_DAEMON_MAX_CONNECTIONS] =
      OTHER("DaemonMaxConnections", TG_VALUE_COUNT, "32768", TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_DAEMON_MAX_BUFFERED] =
      OTHER("DaemonMaxBuffered", TG_VALUE_SIZE, "4G", TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_DAEMON_MAX_PENDING_CALLS] =
      OTHER("DaemonMaxPendingCalls", TG_VALUE_COUNT, "1024", TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_MAX_LIFETIME] = OTHER("MaxLifetime", TG_VALUE_TIME, "none", 0),
  [TG_KW_IDLE_TIMEOUT] = OTHER("IdleTimeout", TG_VALUE_TIME, "none", 0),
  [TG_KW_MAX_RECONNECT_ATTEMPTS] =
      OTHER("MaxReconnectAttempts", TG_VALUE_COUNT, "none", 0),
  [TG_KW_HOST_KEY_POLICY] =
      WORD("HostKeyPolicy", host_key_policy_words, "known-or-pinned", 0),
  [TG_KW_EGRESS_LOCKDOWN] =
      WORD("EgressLockdown", yes_no_words, "no", TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_SSH_PORTS] = OTHER("SshPorts", TG_VALUE_PORTS, "22", TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_LOCKDOWN_EXEMPT] = WORD("LockdownExempt", yes_no_words, "no", 0),
  [TG_KW_LISTENER_GUARD] =
      WORD("ListenerGuard", yes_no_words, "yes", TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_CONNECT_BACK_PINNING] =
      WORD("ConnectBackPinning", yes_no_words, "yes", TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_DETECT_SSH_BANNER] =
      WORD("DetectSshBanner", yes_no_words, "no", TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_LOG_REJECTIONS] =
      WORD("LogRejections", yes_no_words, "yes", TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_SERVER_MODE] = WORD("ServerMode", yes_no_words, "no", TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_SFTP_ONLY] = WORD("SftpOnly", yes_no_words, "no", 0),
  [TG_KW_SERVER_PERMIT_OPEN] =
      HOSTS("ServerPermitOpen", TG_PORT_REQUIRED, TG_KEYWORD_FIREWALL_HOSTS),
  [TG_KW_SSHD_CONFIG] =
      OTHER("SshdConfig", TG_VALUE_PATH, "/etc/ssh/sshd_config", TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_SSHD_BINARY] =
      OTHER("SshdBinary", TG_VALUE_PATH, "/usr/sbin/sshd", TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_SSHD_DROP_IN] =
      OTHER("SshdDropIn", TG_VALUE_PATH, "/etc/ssh/sshd_config.d/00-tunnelgate.conf",
            TG_KEYWORD_GLOBAL_ONLY),
  [TG_KW_SSHD_RELOAD] = WORD("SshdReload", yes_no_words, "yes", TG_KEYWORD_GLOBAL_ONLY),
};

/* ---- Settings and blocks ------------------------------------------------ */

void
tg_host_entry_free(gpointer data)
{
  TgHostEntry *entry = data;

  tg_host_pattern_free(entry->pattern);
  g_free(entry);
}

/* TgNetwork is bytes only, and parsing zeroes what the address does not
 * use, so equal addresses are equal bytes. */
guint
tg_network_hash(gconstpointer key)
{
  const TgNetwork *network = key;
  guint hash = network->family;

  for (gsize i = 0; i < sizeof network->bytes; i++)
    hash = hash * 31 + network->bytes[i];
  return hash;
}

gboolean
tg_network_equal(gconstpointer a, gconstpointer b)
{
  return memcmp(a, b, sizeof(TgNetwork)) == 0;
}

void
tg_setting_free(TgSetting *setting)
{
  if (setting == NULL)
    return;
  g_free(setting->path);
  if (setting->ports != NULL)
    g_array_unref(setting->ports);
  if (setting->hosts.patterns != NULL)
    g_ptr_array_unref(setting->hosts.patterns);
  if (setting->hosts.entries != NULL)
    g_ptr_array_unref(setting->hosts.entries);
  tg_host_index_free(setting->hosts.index);
  if (setting->addresses != NULL)
    g_array_unref(setting->addresses);
  if (setting->address_set != NULL)
    g_hash_table_unref(setting->address_set);
  if (setting->principals != NULL)
    g_ptr_array_unref(setting->principals);
  g_free(setting);
}

void
tg_criterion_clear(gpointer data)
{
  TgCriterion *criterion = data;

  g_strfreev(criterion->patterns);
}

void
tg_block_free(TgBlock *block)
{
  if (block == NULL)
    return;
  for (guint i = 0; i < TG_KW_COUNT; i++)
    tg_setting_free(block->settings[i]);
  if (block->criteria != NULL)
    g_array_unref(block->criteria);
  g_free(block);
}

/* ---- Life cycle --------------------------------------------------------- */

TgPolicy *
tg_policy_new(void)
{
  TgPolicy *policy = g_atomic_rc_box_new0(TgPolicy);

  policy->files = g_ptr_array_new_with_free_func(g_free);
  policy->blocks = g_ptr_array_new_with_free_func((GDestroyNotify)tg_block_free);
  policy->match_blocks = g_ptr_array_new();
  policy->pending_warnings = g_array_new(FALSE, FALSE, sizeof(TgWarning));
  policy->warnings = g_ptr_array_new_with_free_func(g_free);
  return policy;
}

static void
policy_clear(gpointer data)
{
  TgPolicy *policy = data;

  g_ptr_array_unref(policy->match_blocks);
  g_ptr_array_unref(policy->blocks);
  for (guint k = 0; k < TG_KW_COUNT; k++)
    tg_setting_free(policy->defaults[k]);
  for (guint i = 0; i < policy->pending_warnings->len; i++)
    g_free(g_array_index(policy->pending_warnings, TgWarning, i).text);
  g_array_unref(policy->pending_warnings);
  g_ptr_array_unref(policy->warnings);
  g_ptr_array_unref(policy->files);
}

TgPolicy *
tg_policy_ref(TgPolicy *policy)
{
  g_return_val_if_fail(policy != NULL, NULL);
  return g_atomic_rc_box_acquire(policy);
}

void
tg_policy_unref(TgPolicy *policy)
{
  if (policy != NULL)
    g_atomic_rc_box_release_full(policy, policy_clear);
}

const char *const *
tg_policy_get_files(const TgPolicy *policy)
{
  return (const char *const *)policy->files->pdata;
}

const char *const *
tg_policy_get_warnings(const TgPolicy *policy)
{
  return (const char *const *)policy->warnings->pdata;
}

/* ---- Which value applies ------------------------------------------------ */

static gboolean
criterion_matches(const TgCriterion *criterion, const TgPolicySubject *subject)
{
  const char *const *patterns = (const char *const *)criterion->patterns;

  switch (criterion->kind) {
  case TG_CRITERION_ALL:
    return TRUE;
  case TG_CRITERION_USER:
    return subject != NULL &&
           tg_pattern_list_match(patterns, subject->user) == TG_PATTERN_LIST_MATCH;
  case TG_CRITERION_GROUP:
    return subject != NULL &&
           tg_pattern_list_match_any(patterns, (const char *const *)subject->groups);
  }
  return FALSE;
}

static gboolean
block_matches(const TgBlock *block, const TgPolicySubject *subject)
{
  for (guint i = 0; i < block->criteria->len; i++) {
    if (!criterion_matches(&g_array_index(block->criteria, TgCriterion, i), subject))
      return FALSE;
  }
  return TRUE;
}

/* The first matching Match block that sets @keyword, else the first global
 * line, else the default (doc/policy.md, "Files and which value wins"). */
const TgSetting *
tg_policy_effective(const TgPolicy *policy, const TgPolicySubject *subject,
                    TgPolicyKeyword keyword)
{
  for (guint i = 0; i < policy->match_blocks->len; i++) {
    const TgBlock *block = g_ptr_array_index(policy->match_blocks, i);

    if (block->settings[keyword] != NULL && block_matches(block, subject))
      return block->settings[keyword];
  }
  if (policy->global[keyword] != NULL)
    return policy->global[keyword];
  return policy->defaults[keyword];
}
