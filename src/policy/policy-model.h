/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The policy model: its insides, built by policy-parser.c and answered from
 * by policy.c; policy-model.c holds their life cycle. Not for other
 * callers: use policy.h. */
#pragma once

#include "policy-match.h"
#include "policy.h"

/* In the order doc/policy.md lists them; the dump uses this order too. */
typedef enum {
  TG_KW_ALLOW_TCP_FORWARDING,
  TG_KW_ALLOW_STREAM_LOCAL_FORWARDING,
  TG_KW_ALLOW_DYNAMIC_FORWARDING,
  TG_KW_GATEWAY_PORTS,
  TG_KW_LISTENER_SOURCES,
  TG_KW_LISTENER_USERS,
  TG_KW_PERMIT_OPEN,
  TG_KW_PERMIT_REMOTE_OPEN,
  TG_KW_PERMIT_LISTEN,
  TG_KW_PERMIT_SERVER,
  TG_KW_MAX_TUNNELS,
  TG_KW_MAX_CONNECTIONS,
  TG_KW_MAX_LISTENERS,
  TG_KW_MAX_BUFFERED,
  TG_KW_MAX_PENDING_CALLS,
  TG_KW_DAEMON_MAX_TUNNELS,
  TG_KW_DAEMON_MAX_LISTENERS,
  TG_KW_DAEMON_MAX_CONNECTIONS,
  TG_KW_DAEMON_MAX_BUFFERED,
  TG_KW_DAEMON_MAX_PENDING_CALLS,
  TG_KW_MAX_LIFETIME,
  TG_KW_IDLE_TIMEOUT,
  TG_KW_MAX_RECONNECT_ATTEMPTS,
  TG_KW_HOST_KEY_POLICY,
  TG_KW_EGRESS_LOCKDOWN,
  TG_KW_SSH_PORTS,
  TG_KW_LOCKDOWN_EXEMPT,
  TG_KW_LISTENER_GUARD,
  TG_KW_CONNECT_BACK_PINNING,
  TG_KW_DETECT_SSH_BANNER,
  TG_KW_LOG_REJECTIONS,
  TG_KW_SERVER_MODE,
  TG_KW_SFTP_ONLY,
  TG_KW_SERVER_PERMIT_OPEN,
  TG_KW_SSHD_CONFIG,
  TG_KW_SSHD_BINARY,
  TG_KW_SSHD_DROP_IN,
  TG_KW_SSHD_RELOAD,
  TG_KW_COUNT
} TgPolicyKeyword;

typedef enum {
  TG_VALUE_WORD,       /* one of the keyword's words: yes|no, no|yes|clientspecified... */
  TG_VALUE_HOSTS,      /* allow-list entries, any, none */
  TG_VALUE_COUNT,      /* number or none */
  TG_VALUE_SIZE,       /* bytes, "64K", "512M", "2G", or none */
  TG_VALUE_TIME,       /* seconds, "90m", "1h30m", or none */
  TG_VALUE_PORTS,      /* port,... */
  TG_VALUE_PATH,       /* absolute path */
  TG_VALUE_ADDRESSES,  /* single IP addresses, any, none (ListenerSources) */
  TG_VALUE_PRINCIPALS, /* owner, any, user:NAME, group:NAME (ListenerUsers) */
} TgValueType;

typedef enum {
  TG_KEYWORD_GLOBAL_ONLY = 1 << 0, /* an error inside Match */
  TG_KEYWORD_LIST = 1 << 1,        /* lines add up within one block */
  /* TG_VALUE_HOSTS enforced by the firewall, which holds addresses: names
   * (the daemon resolves them), addresses and networks; no wildcards. */
  TG_KEYWORD_FIREWALL_HOSTS = 1 << 3,
} TgKeywordFlags;

typedef struct {
  const char *name;
  TgValueType type;
  const char *const *words; /* TG_VALUE_WORD: the index is the value */
  TgPortRule port_rule;     /* TG_VALUE_HOSTS */
  const char *default_text;
  guint flags;
} TgKeywordInfo;

extern const TgKeywordInfo tg_policy_keywords[TG_KW_COUNT];

/* Word indices of AllowTcpForwarding and AllowStreamLocalForwarding. */
typedef enum {
  TG_FORWARDING_YES,
  TG_FORWARDING_ALL,
  TG_FORWARDING_NO,
  TG_FORWARDING_LOCAL,
  TG_FORWARDING_REMOTE,
} TgForwardingWord;

typedef struct {
  TgHostPattern *pattern;
  guint line;
} TgHostEntry;

typedef struct {
  gboolean any;
  gboolean none;
  GPtrArray *entries;  /* TgHostEntry, in file order */
  GPtrArray *patterns; /* the entries' TgHostPattern (borrowed), in file order */
  TgHostIndex *index;  /* over entries; lookups return the TgHostEntry */
} TgHostList;

/* One keyword's value in one block. For list keywords, every line of the
 * block adds to it; file and line are those of its first line. */
typedef struct {
  TgPolicyKeyword keyword;
  const char *file; /* owned by the policy; "<default>" for defaults */
  guint line;       /* 0 for defaults */
  guint word;       /* TG_VALUE_WORD */
  gboolean none;    /* TG_VALUE_COUNT, _SIZE, _TIME, _ADDRESSES */
  gboolean any;     /* TG_VALUE_ADDRESSES */
  guint64 number;   /* TG_VALUE_COUNT, TG_VALUE_SIZE (bytes), TG_VALUE_TIME (seconds) */
  char *path;       /* TG_VALUE_PATH */
  GArray *ports;    /* TG_VALUE_PORTS: TgPortRange */
  TgHostList hosts; /* TG_VALUE_HOSTS */
  /* TG_VALUE_ADDRESSES: TgNetwork with full-length prefixes, in file order,
   * each once; @address_set holds the same addresses while lines add up. */
  GArray *addresses;
  GHashTable *address_set;
  /* TG_VALUE_PRINCIPALS: "user:NAME" and "group:NAME", in file order, each
   * once (@any: no restriction; the owner is always allowed) */
  GPtrArray *principals;
} TgSetting;

typedef enum {
  TG_CRITERION_ALL,
  TG_CRITERION_USER,
  TG_CRITERION_GROUP,
} TgCriterionKind;

typedef struct {
  TgCriterionKind kind;
  char **patterns; /* NULL for All */
} TgCriterion;

/* A file's global section, or one Match block. */
typedef struct {
  const char *file;
  guint line;       /* of the Match line; 0 for a global section */
  GArray *criteria; /* TgCriterion; NULL for a global section */
  TgSetting *settings[TG_KW_COUNT];
} TgBlock;

typedef struct {
  guint file_index; /* in TgPolicy.files */
  guint line;
  guint sequence; /* keeps the order of warnings for one line */
  char *text;     /* "file:line: message" */
} TgWarning;

struct _TgPolicy {
  GPtrArray *files;                     /* char*, NULL-terminated: files read, in order */
  GPtrArray *blocks;                    /* TgBlock, in precedence order */
  GPtrArray *match_blocks;              /* the Match blocks of @blocks, in order */
  const TgSetting *global[TG_KW_COUNT]; /* first global setting, or NULL */
  TgSetting *defaults[TG_KW_COUNT];     /* the built-in defaults */
  GArray *pending_warnings;             /* TgWarning, while parsing */
  guint dropped_warnings;               /* beyond TG_POLICY_MAX_WARNINGS */
  GPtrArray *warnings;                  /* char*, NULL-terminated, by file, line */
  TgPolicyGlobals globals;              /* from the global-only keywords */
};

#define TG_POLICY_DEFAULT_ORIGIN "<default>"
/* A 16 MiB file of repeated lines must not become a gigabyte of warnings. */
#define TG_POLICY_MAX_WARNINGS 1000

/* policy-model.c: the life cycle, and which setting applies */
TgPolicy *tg_policy_new(void);
const TgSetting *tg_policy_effective(const TgPolicy *policy,
                                     const TgPolicySubject *subject,
                                     TgPolicyKeyword keyword);
void tg_block_free(TgBlock *block);
void tg_setting_free(TgSetting *setting);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TgSetting, tg_setting_free)
/* GDestroyNotify of TgHostList.entries, GArray clear func of criteria, and
 * the hash functions of TgSetting.address_set */
void tg_host_entry_free(gpointer entry);
void tg_criterion_clear(gpointer criterion);
guint tg_network_hash(gconstpointer network);
gboolean tg_network_equal(gconstpointer a, gconstpointer b);

/* policy-parser.c */
gboolean tg_policy_parse_source(TgPolicy *policy, const char *file, const char *data,
                                gsize length, GError **error);
/* After the last source: defaults, global values, warnings. */
void tg_policy_finish(TgPolicy *policy);
