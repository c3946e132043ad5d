/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include "accounts.h"
#include "log.h"
#include "resolve.h"
#include "tg-error.h"
#include "worker.h"

#define RESYNC_DELAY_MS 300 /* coalesces the writes of one useradd/usermod */
#define MAX_PORTS_PER_ENTRY                                                              \
  256 /* a ServerPermitOpen port range put in the kernel set                             \
       */

struct _TgServer {
  TgEnforcer *enforcer;
  TgPolicy *policy; /* the one in force, for the passwd/group watch */
  gboolean active;
  GPtrArray *sftp_users; /* char*: SFTP-only user names, for the audit */
  GPtrArray *notes;      /* TgServerFinding*: what the last placing could not do */
  GHashTable *known;     /* uids in the kernel's server_known_uids */
  GHashTable *learned;   /* uids first met in the kernel, placed on every apply */
  GFileMonitor *monitors[2];
  guint resync_timer;
  char *dropin_error;  /* the last drop-in sshd -t refused, or NULL */
  GError *apply_error; /* the firewall refused the last users, or NULL */
  /* the worker (see kick()) */
  struct _Job *job;         /* the one running, or NULL */
  gboolean want_apply;      /* users, firewall, drop-in and audit again */
  gboolean want_off;        /* remove the drop-in */
  GPtrArray *audit_waiters; /* GTask*: Audit callers not yet given to a job */
  GPtrArray *idle_waiters;  /* GTask*: waiting for the worker to be idle */
  /* learning (see learn_kick()) */
  struct _Learning *learning; /* the job running, or NULL */
  gboolean want_learn;
};

static void
finding_free(gpointer data)
{
  TgServerFinding *finding = data;

  g_free(finding->user);
  g_free(finding->setting);
  g_free(finding->value);
  g_free(finding);
}

static void
add_finding(GPtrArray *findings, const char *user, const char *setting, const char *value)
{
  TgServerFinding *finding = g_new0(TgServerFinding, 1);

  finding->user = g_strdup(user);
  finding->setting = g_strdup(setting);
  finding->value = g_strdup(value);
  g_ptr_array_add(findings, finding);
}

/* ---- who ---- */

static void
add_jump_rules(GArray *rules, guint32 uid, const TgHostPattern *pattern)
{
  GArray *networks = g_array_new(FALSE, FALSE, sizeof(TgNetwork));

  if (pattern->kind == TG_HOST_PATTERN_NETWORK) {
    g_array_append_val(networks, pattern->network);
  } else if (pattern->kind == TG_HOST_PATTERN_NAME) {
    tg_resolve_networks(pattern->name, networks);
  }
  if (networks->len == 0) {
    g_autofree char *text = tg_host_pattern_to_string(pattern, TG_PORT_REQUIRED);
    tg_warning("server mode: ServerPermitOpen entry %s for uid %u names no address now "
               "(it does not resolve); the kernel refuses it until it does",
               text, uid);
  }
  for (guint i = 0; i < networks->len; i++) {
    TgFirewallJumpRule rule = { .uid = uid,
                                .network = g_array_index(networks, TgNetwork, i),
                                .first_port = MAX(pattern->ports.first, 1),
                                .last_port = pattern->ports.last };
    g_array_append_val(rules, rule);
  }
  g_array_unref(networks);
}

/* Uids placed under one policy: every one is known to the kernel, some
 * SFTP-only, some jump-host users. */
typedef struct {
  GHashTable *seen;   /* uid: placed or tried */
  GArray *known_uids; /* guint32 */
  GArray *sftp_uids;  /* guint32 */
  GPtrArray *sftp_names;
  GArray *jump_uids;   /* guint32 */
  GArray *jump_rules;  /* TgFirewallJumpRule */
  GPtrArray *placed;   /* char*: "uid N (name): what", for the log (learning) */
  GPtrArray *findings; /* TgServerFinding*: names the policy uses that NSS
                        * does not resolve or list, what the drop-in leaves out */
} Users;

static void
users_init(Users *users)
{
  users->seen = g_hash_table_new(NULL, NULL);
  users->known_uids = g_array_new(FALSE, FALSE, sizeof(guint32));
  users->sftp_uids = g_array_new(FALSE, FALSE, sizeof(guint32));
  users->sftp_names = g_ptr_array_new_with_free_func(g_free);
  users->jump_uids = g_array_new(FALSE, FALSE, sizeof(guint32));
  users->jump_rules = g_array_new(FALSE, FALSE, sizeof(TgFirewallJumpRule));
  users->placed = g_ptr_array_new_with_free_func(g_free);
  users->findings = g_ptr_array_new_with_free_func(finding_free);
}

static void
users_clear(Users *users)
{
  g_hash_table_unref(users->seen);
  g_array_unref(users->known_uids);
  g_array_unref(users->sftp_uids);
  g_ptr_array_unref(users->sftp_names);
  g_array_unref(users->jump_uids);
  g_array_unref(users->jump_rules);
  g_ptr_array_unref(users->placed);
  g_ptr_array_unref(users->findings);
}

static TgFirewallServerUsers
users_for_firewall(const Users *users)
{
  TgFirewallServerUsers out = {
    .known_uids = (const guint32 *)users->known_uids->data,
    .n_known_uids = users->known_uids->len,
    .sftp_only_uids = (const guint32 *)users->sftp_uids->data,
    .n_sftp_only_uids = users->sftp_uids->len,
    .jump_uids = (const guint32 *)users->jump_uids->data,
    .n_jump_uids = users->jump_uids->len,
    .jump_rules = (const TgFirewallJumpRule *)users->jump_rules->data,
    .n_jump_rules = users->jump_rules->len,
  };
  return out;
}

/* Decides what @uid is under @policy. A uid NSS has no account for is
 * placed as a user no Match User or Group applies to; one NSS cannot
 * answer for stays unknown, so the kernel keeps dropping its packets. Root
 * is always known and never restricted: the sockets of the connections
 * sshd accepts are root's. */
static void
place_uid(const TgPolicy *policy, guint32 uid, Users *users)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicySubject) subject = NULL;
  g_autofree char *name = NULL;
  TgPolicyOrigin origin;
  TgPolicyHostList permit;
  const char *what = "unrestricted";

  if (uid == 0 || g_hash_table_contains(users->seen, GUINT_TO_POINTER(uid)))
    return;
  g_hash_table_add(users->seen, GUINT_TO_POINTER(uid));
  subject = tg_policy_subject_from_uid(uid, &error);
  if (subject == NULL && !g_error_matches(error, TG_ERROR, TG_ERROR_NOT_FOUND)) {
    tg_warning("server mode: uid %u not placed, its packets stay dropped: %s", uid,
               error->message);
    return;
  }
  name = subject != NULL ? g_strdup(subject->user) : g_strdup_printf("%u", uid);
  g_array_append_val(users->known_uids, uid);
  if (tg_policy_is_sftp_only(policy, subject, &origin)) {
    g_array_append_val(users->sftp_uids, uid);
    if (subject != NULL)
      g_ptr_array_add(users->sftp_names, g_strdup(subject->user));
    what = "SFTP-only";
  } else {
    tg_policy_get_server_permit_open(policy, subject, &permit);
    if (!permit.any) {
      g_array_append_val(users->jump_uids, uid);
      for (guint i = 0; permit.entries != NULL && i < permit.entries->len; i++)
        add_jump_rules(users->jump_rules, uid, g_ptr_array_index(permit.entries, i));
      what = "jump host";
    }
  }
  g_ptr_array_add(users->placed, g_strdup_printf("uid %u (%s): %s", uid, name, what));
}

static void unresolved(Users *users, const char *user, const char *setting,
                       const char *format, ...) G_GNUC_PRINTF(4, 5);

static void
unresolved(Users *users, const char *user, const char *setting, const char *format, ...)
{
  va_list args;
  g_autofree char *text = NULL;

  va_start(args, format);
  text = g_strdup_vprintf(format, args);
  va_end(args);
  add_finding(users->findings, user, setting, text);
}

/* The users and groups the server-mode blocks name: each user NSS resolves
 * by name, and each member a group lists, is placed; what NSS does not
 * know, and who cannot be listed at all, is a finding. */
static void
place_named(const TgPolicy *policy, Users *users)
{
  g_autoptr(GPtrArray) names = tg_policy_server_names(policy);
  g_autoptr(GPtrArray) groups = NULL;
  g_autoptr(GHashTable) enumerated = NULL;

  for (guint i = 0; i < names->len; i++) {
    const TgPolicyServerName *name = g_ptr_array_index(names, i);
    const char *kind = name->group ? "Group" : "User";
    g_autoptr(GPtrArray) members = NULL;
    guint32 uid;
    int found;

    if (name->wildcard) {
      if (!name->negated)
        unresolved(users, "*", "unlisted-members",
                   "Match %s %s at %s:%u: who matches a pattern is known only from "
                   "what NSS enumerates; others are placed when the kernel first "
                   "sees a socket of theirs, and audited from then on",
                   kind, name->name, name->file, name->line);
      continue;
    }
    if (!name->group) {
      found = tg_accounts_lookup_user(name->name, &uid);
      if (found > 0)
        place_uid(policy, uid, users);
      else
        unresolved(users, name->name, "unknown-user",
                   "Match User at %s:%u names %s, which NSS %s", name->file, name->line,
                   name->name, found == 0 ? "does not know" : "could not look up");
      continue;
    }
    members = g_ptr_array_new_with_free_func(g_free);
    found = tg_accounts_group_members(name->name, members);
    if (found <= 0) {
      unresolved(users, "*", "unknown-group",
                 "Match Group at %s:%u names %s, which NSS %s", name->file, name->line,
                 name->name, found == 0 ? "does not know" : "could not look up");
      continue;
    }
    for (guint m = 0; m < members->len; m++) {
      if (tg_accounts_lookup_user(g_ptr_array_index(members, m), &uid) > 0)
        place_uid(policy, uid, users);
    }
    if (name->negated)
      continue;
    if (enumerated == NULL) {
      groups = tg_accounts_list_groups();
      enumerated = g_hash_table_new(g_str_hash, g_str_equal);
      for (guint g = 0; g < groups->len; g++)
        g_hash_table_add(enumerated, g_ptr_array_index(groups, g));
    }
    if (!g_hash_table_contains(enumerated, name->name))
      unresolved(users, "*", "unlisted-members",
                 "Match Group %s at %s:%u: NSS does not enumerate this group, so "
                 "members whose primary group it is cannot be listed; they are placed "
                 "when the kernel first sees a socket of theirs, and audited from then "
                 "on",
                 name->name, name->file, name->line);
  }
}

static void
collect_users(const TgPolicy *policy, GArray *learned, Users *users)
{
  g_autoptr(GPtrArray) accounts = tg_accounts_list();

  users_init(users);
  for (guint a = 0; a < accounts->len; a++)
    place_uid(policy, ((const TgAccount *)g_ptr_array_index(accounts, a))->uid, users);
  place_named(policy, users);
  for (guint i = 0; i < learned->len; i++)
    place_uid(policy, g_array_index(learned, guint32, i), users);
}

/* ---- sshd ---- */

/* Runs sshd with @args; TRUE on exit status 0. *out gets stdout, and
 * *error says what went wrong (stderr) otherwise. */
static gboolean
run_sshd(const TgPolicyGlobals *globals, const char *const *args, char **out,
         GError **error)
{
  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  g_autofree char *standard_error = NULL;
  int status = 0;

  g_ptr_array_add(argv, (char *)globals->sshd_binary);
  for (guint i = 0; args[i] != NULL; i++)
    g_ptr_array_add(argv, (char *)args[i]);
  g_ptr_array_add(argv, NULL);
  if (!g_spawn_sync("/", (char **)argv->pdata, NULL, G_SPAWN_STDIN_FROM_DEV_NULL, NULL,
                    NULL, out, &standard_error, &status, error))
    return FALSE;
  if (!g_spawn_check_wait_status(status, NULL)) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "%s %s: %s", globals->sshd_binary,
                args[0], g_strstrip(standard_error));
    return FALSE;
  }
  return TRUE;
}

/* One Match block per condition under which the policy says SftpOnly
 * (tg_policy_sftp_only_sshd_matches()): sshd decides who matches, for any
 * user NSS gives it. */
static char *
dropin_text(const TgPolicy *policy, GPtrArray *notes)
{
  g_autoptr(GPtrArray) matches = tg_policy_sftp_only_sshd_matches(policy, notes);
  GString *text = g_string_new(
      "# Written by tunnelgated (server mode) for the users the policy marks\n"
      "# SftpOnly: no forwarding of any kind. Replaced on every policy reload;\n"
      "# edit the tunnelgate policy, not this file.\n");

  for (guint i = 0; i < matches->len; i++)
    g_string_append_printf(text,
                           "\nMatch %s\n"
                           "\tDisableForwarding yes\n"
                           "\tAllowTcpForwarding no\n"
                           "\tAllowStreamLocalForwarding no\n"
                           "\tAllowAgentForwarding no\n"
                           "\tX11Forwarding no\n"
                           "\tPermitTunnel no\n"
                           "\tPermitOpen none\n"
                           "\tPermitListen none\n"
                           "\tGatewayPorts no\n",
                           (const char *)g_ptr_array_index(matches, i));
  return g_string_free(text, FALSE);
}

/* SIGHUP to the sshd whose PidFile `sshd -T` names. */
static void
reload_sshd(const TgPolicyGlobals *globals)
{
  const char *args[] = { "-T", "-f", globals->sshd_config, NULL };
  g_autofree char *out = NULL, *pid_text = NULL;
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) lines = NULL;
  const char *pidfile = NULL;
  gint64 pid;

  if (!run_sshd(globals, args, &out, &error)) {
    tg_warning("server mode: cannot ask sshd for its PidFile: %s", error->message);
    return;
  }
  lines = g_strsplit(out, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++) {
    if (g_str_has_prefix(lines[i], "pidfile "))
      pidfile = lines[i] + strlen("pidfile ");
  }
  if (pidfile == NULL || !g_file_get_contents(pidfile, &pid_text, NULL, NULL) ||
      (pid = g_ascii_strtoll(g_strstrip(pid_text), NULL, 10)) <= 1) {
    tg_warning("server mode: sshd's PidFile %s names no process; not reloaded",
               pidfile != NULL ? pidfile : "(none)");
    return;
  }
  if (kill((pid_t)pid, SIGHUP) != 0)
    tg_warning("server mode: cannot signal sshd (pid %" G_GINT64_FORMAT "): %s", pid,
               g_strerror(errno));
  else
    tg_message("server mode: sshd (pid %" G_GINT64_FORMAT ") told to reload", pid);
}

static guint
count_matches(const char *text)
{
  guint n = 0;

  for (const char *p = text; (p = strstr(p, "\nMatch ")) != NULL; p++)
    n++;
  return n;
}

/* Writes the drop-in for @policy if its text changed (or the last try,
 * @last_error, failed): next to it first, checked with `sshd -t` together
 * with the main configuration, then renamed over it. Returns why it was
 * not installed, or NULL. Any thread. */
static char *
install_dropin(const TgPolicy *policy, const char *last_error)
{
  const TgPolicyGlobals *globals = tg_policy_get_globals(policy);
  g_autoptr(GPtrArray) notes = g_ptr_array_new_with_free_func(g_free);
  g_autofree char *text = dropin_text(policy, notes);
  g_autofree char *current = NULL;
  g_autofree char *directory = g_path_get_dirname(globals->sshd_drop_in);
  g_autofree char *candidate =
      g_build_filename(directory, ".tunnelgate-dropin.new", NULL);
  g_autofree char *wrapper = g_build_filename(directory, ".tunnelgate-check.conf", NULL);
  g_autofree char *wrapper_text = NULL;
  g_autoptr(GError) error = NULL;
  const char *args[] = { "-t", "-f", wrapper, NULL };

  if (g_file_get_contents(globals->sshd_drop_in, &current, NULL, NULL) &&
      g_str_equal(current, text) && last_error == NULL)
    return NULL;
  wrapper_text = g_strdup_printf("# tunnelgated: checking %s before installing it\n"
                                 "Include %s\nInclude %s\n",
                                 globals->sshd_drop_in, candidate, globals->sshd_config);
  if (g_file_set_contents_full(candidate, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0644,
                               &error) &&
      g_file_set_contents_full(wrapper, wrapper_text, -1, G_FILE_SET_CONTENTS_CONSISTENT,
                               0600, &error) &&
      run_sshd(globals, args, NULL, &error) &&
      g_rename(candidate, globals->sshd_drop_in) != 0)
    g_set_error(&error, TG_ERROR, TG_ERROR_FAILED, "rename to %s: %s",
                globals->sshd_drop_in, g_strerror(errno));
  if (error != NULL) {
    g_unlink(candidate);
    g_unlink(wrapper);
    tg_log_event(
        G_LOG_LEVEL_WARNING, "SSHD_DROPIN_REFUSED", "MESSAGE",
        "server mode: the sshd drop-in %s was not installed (the old one stays): "
        "%s",
        globals->sshd_drop_in, error->message);
    return g_strdup(error->message);
  }
  g_unlink(wrapper);
  tg_log_event(G_LOG_LEVEL_MESSAGE, "SSHD_DROPIN_INSTALLED", "MESSAGE",
               "server mode: sshd drop-in %s installed (%u Match blocks)",
               globals->sshd_drop_in, count_matches(text));
  for (guint i = 0; i < notes->len; i++)
    tg_warning("server mode: drop-in %s: %s", globals->sshd_drop_in,
               (const char *)g_ptr_array_index(notes, i));
  if (globals->sshd_reload)
    reload_sshd(globals);
  return NULL;
}

/* ---- audit ---- */

/* `sshd -T -C user=...` for each of @names: forwarding it still allows is
 * a finding; so is every one of @notes (names NSS does not resolve or
 * list) and what the drop-in leaves out. All logged. Any thread. */
static GPtrArray *
audit(const TgPolicy *policy, GPtrArray *names, const char *dropin_error,
      GPtrArray *notes)
{
  static const char *const forwarding[] = { "allowtcpforwarding",
                                            "allowstreamlocalforwarding",
                                            "allowagentforwarding", "x11forwarding",
                                            "permittunnel" };
  const TgPolicyGlobals *globals = tg_policy_get_globals(policy);
  GPtrArray *findings = g_ptr_array_new_with_free_func(finding_free);
  g_autoptr(GPtrArray) omitted = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GPtrArray) matches = tg_policy_sftp_only_sshd_matches(policy, omitted);

  if (dropin_error != NULL)
    add_finding(findings, "*", "drop-in", dropin_error);
  for (guint i = 0; i < omitted->len; i++)
    add_finding(findings, "*", "drop-in", g_ptr_array_index(omitted, i));
  for (guint i = 0; i < notes->len; i++) {
    const TgServerFinding *note = g_ptr_array_index(notes, i);
    add_finding(findings, note->user, note->setting, note->value);
  }
  for (guint i = 0; i < names->len; i++) {
    const char *user = g_ptr_array_index(names, i);
    g_autofree char *connection =
        g_strdup_printf("user=%s,host=localhost,addr=127.0.0.1", user);
    const char *args[] = { "-T", "-f", globals->sshd_config, "-C", connection, NULL };
    g_autofree char *out = NULL;
    g_autoptr(GError) error = NULL;
    g_auto(GStrv) lines = NULL;
    gboolean disabled = FALSE;

    if (strchr(user, ',') != NULL) { /* -C takes a comma-separated list */
      add_finding(findings, user, "sshd -T",
                  "a name with ',' cannot be given to sshd -C");
      continue;
    }
    if (!run_sshd(globals, args, &out, &error)) {
      add_finding(findings, user, "sshd -T", error->message);
      continue;
    }
    lines = g_strsplit(out, "\n", -1);
    for (guint l = 0; lines[l] != NULL; l++)
      disabled |= g_str_equal(lines[l], "disableforwarding yes");
    for (guint l = 0; lines[l] != NULL && !disabled; l++) {
      for (guint k = 0; k < G_N_ELEMENTS(forwarding); k++) {
        gsize length = strlen(forwarding[k]);

        if (strncmp(lines[l], forwarding[k], length) == 0 && lines[l][length] == ' ' &&
            !g_str_equal(lines[l] + length + 1, "no")) {
          add_finding(findings, user, forwarding[k], lines[l] + length + 1);
          tg_log_event(G_LOG_LEVEL_WARNING, "SERVER_DRIFT", "USER", user, "MESSAGE",
                       "server mode: SFTP-only user %s: sshd allows %s %s (the kernel "
                       "still blocks forwarding)",
                       user, forwarding[k], lines[l] + length + 1);
        }
      }
    }
  }
  for (guint i = 0; i < findings->len; i++) {
    const TgServerFinding *finding = g_ptr_array_index(findings, i);

    if (g_str_equal(finding->setting, "unknown-user") ||
        g_str_equal(finding->setting, "unknown-group") ||
        g_str_equal(finding->setting, "unlisted-members") ||
        g_str_equal(finding->setting, "learning"))
      tg_log_event(G_LOG_LEVEL_WARNING, "SERVER_UNRESOLVED", "USER", finding->user,
                   "MESSAGE", "server mode: %s", finding->value);
  }
  return findings;
}

/* ---- the worker ----
 *
 * One job at a time runs on a worker thread; the D-Bus thread only starts
 * jobs and takes their results (the firewall's sets are written there).
 * A change that comes while a job runs marks the work as wanted again, so
 * any burst of /etc/passwd or /etc/group writes costs one more job.
 * Learning (below) has a worker job of its own, so a uid met for the first
 * time is not kept waiting by a running sshd. */

typedef enum { JOB_APPLY, JOB_OFF, JOB_AUDIT } JobKind;

typedef struct _Job {
  TgServer *server;
  JobKind kind;
  TgPolicy *policy;
  GArray *learned; /* JOB_APPLY: the uids learned so far, placed again */
  Users users;     /* JOB_APPLY, first half */
  gboolean have_users;
  GPtrArray *names;    /* SFTP-only user names the audit is for */
  GPtrArray *notes;    /* TgServerFinding*: from placing the users */
  char *dropin_error;  /* in: the last one; out: this job's */
  GPtrArray *findings; /* TgServerFinding* */
  GPtrArray *waiters;  /* GTask*: audit callers this job answers */
} Job;

static void
job_free(Job *job)
{
  if (job->have_users)
    users_clear(&job->users);
  if (job->learned != NULL)
    g_array_unref(job->learned);
  if (job->names != NULL)
    g_ptr_array_unref(job->names);
  if (job->notes != NULL)
    g_ptr_array_unref(job->notes);
  if (job->findings != NULL)
    g_ptr_array_unref(job->findings);
  if (job->waiters != NULL)
    g_ptr_array_unref(job->waiters);
  g_free(job->dropin_error);
  tg_policy_unref(job->policy);
  g_free(job);
}

static GPtrArray *
copy_names(GPtrArray *names)
{
  GPtrArray *copy = g_ptr_array_new_full(names->len, g_free);

  for (guint i = 0; i < names->len; i++)
    g_ptr_array_add(copy, g_strdup(g_ptr_array_index(names, i)));
  return copy;
}

static GPtrArray *
copy_findings(GPtrArray *findings)
{
  GPtrArray *copy = g_ptr_array_new_full(findings->len, finding_free);

  for (guint i = 0; i < findings->len; i++) {
    const TgServerFinding *finding = g_ptr_array_index(findings, i);
    add_finding(copy, finding->user, finding->setting, finding->value);
  }
  return copy;
}

/* The server's notes for the audit: the last placing's, and why learning
 * does not work, if it does not. */
static GPtrArray *
server_notes(TgServer *server)
{
  GPtrArray *notes = copy_findings(server->notes);

  const char *log_error = tg_enforcer_get_log_error(server->enforcer);

  if (log_error != NULL) {
    g_autofree char *text = g_strdup_printf(
        "the daemon is not told of uids it has not placed, so users NSS does not "
        "enumerate stay offline: %s",
        log_error);
    add_finding(notes, "*", "learning", text);
  }
  return notes;
}

static void kick(TgServer *server);
static void learn_kick(TgServer *server);

static void
run_job(Job *job, GTaskThreadFunc thread, GAsyncReadyCallback done)
{
  g_autoptr(GTask) task = g_task_new(NULL, NULL, done, job);

  g_task_set_task_data(task, job, NULL);
  tg_worker_run(task, thread);
}

/* The job is over: answer its audit callers (a job that ended before its
 * audit hands them on to the next), start what is wanted next. */
static void
job_done(Job *job)
{
  TgServer *server = job->server;

  for (guint i = 0; job->waiters != NULL && i < job->waiters->len; i++) {
    GTask *waiter = g_ptr_array_index(job->waiters, i);

    if (job->findings == NULL)
      g_ptr_array_add(server->audit_waiters, g_object_ref(waiter));
    else
      g_task_return_pointer(waiter, copy_findings(job->findings),
                            (GDestroyNotify)g_ptr_array_unref);
  }
  job_free(job);
  server->job = NULL;
  kick(server);
}

static void
thread_check(GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
  Job *job = task_data;
  g_autofree char *dropin_error = NULL;

  if (job->kind == JOB_APPLY) {
    dropin_error = install_dropin(job->policy, job->dropin_error);
    g_free(job->dropin_error);
    job->dropin_error = g_steal_pointer(&dropin_error);
  }
  job->findings = audit(job->policy, job->names, job->dropin_error, job->notes);
  g_task_return_boolean(task, TRUE);
}

static void
checked(GObject *source, GAsyncResult *result, gpointer user_data)
{
  Job *job = user_data;
  TgServer *server = job->server;
  g_autoptr(GError) error = NULL;

  if (!g_task_propagate_boolean(G_TASK(result), &error)) { /* no thread */
    tg_warning("server mode: %s", error->message);
    job->findings = g_ptr_array_new_with_free_func(finding_free);
    add_finding(job->findings, "*", "audit", error->message);
    job_done(job);
    return;
  }

  if (job->kind == JOB_APPLY) {
    g_free(server->dropin_error);
    server->dropin_error = g_strdup(job->dropin_error);
  }
  job_done(job);
}

static void
thread_collect(GTask *task, gpointer source, gpointer task_data,
               GCancellable *cancellable)
{
  Job *job = task_data;

  collect_users(job->policy, job->learned, &job->users);
  job->have_users = TRUE;
  g_task_return_boolean(task, TRUE);
}

static void
collected(GObject *source, GAsyncResult *result, gpointer user_data)
{
  Job *job = user_data;
  TgServer *server = job->server;
  Users *users = &job->users;
  TgFirewallServerUsers sets;
  g_autoptr(GError) error = NULL;

  if (!g_task_propagate_boolean(G_TASK(result), &error)) { /* no thread */
    g_prefix_error(&error, "users not read: ");
    tg_warning("server mode: %s", error->message);
    g_clear_error(&server->apply_error);
    server->apply_error = g_steal_pointer(&error);
    job_done(job);
    return;
  }
  if (server->policy != job->policy || !server->active) { /* overtaken */
    job_done(job);
    return;
  }
  sets = users_for_firewall(users);
  if (!tg_enforcer_set_server_users(server->enforcer, &sets, &error)) {
    tg_warning("server mode: %s", error->message);
    g_clear_error(&server->apply_error);
    server->apply_error = g_steal_pointer(&error);
    job_done(job);
    return;
  }
  g_clear_error(&server->apply_error);
  g_ptr_array_unref(server->sftp_users);
  server->sftp_users = g_ptr_array_ref(users->sftp_names);
  g_ptr_array_unref(server->notes);
  server->notes = g_ptr_array_ref(users->findings);
  /* learned uids placed after this job started are unknown again until
   * their next packet: the kernel drops it, and they are learned anew */
  g_hash_table_remove_all(server->known);
  for (guint i = 0; i < users->known_uids->len; i++)
    g_hash_table_add(server->known,
                     GUINT_TO_POINTER(g_array_index(users->known_uids, guint32, i)));
  tg_message("server mode: %u uids placed: %u SFTP-only users, %u jump-host users (%u "
             "allowed destinations) enforced",
             users->known_uids->len, users->sftp_uids->len, users->jump_uids->len,
             users->jump_rules->len);
  job->names = copy_names(server->sftp_users);
  job->notes = server_notes(server);
  job->dropin_error = g_strdup(server->dropin_error);
  run_job(job, thread_check, checked);
  learn_kick(server); /* what was dropped while this ran */
}

static void
thread_off(GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
  Job *job = task_data;
  const TgPolicyGlobals *globals = tg_policy_get_globals(job->policy);

  if (g_unlink(globals->sshd_drop_in) == 0) {
    tg_message("server mode off: sshd drop-in %s removed", globals->sshd_drop_in);
    if (globals->sshd_reload)
      reload_sshd(globals);
  }
  g_task_return_boolean(task, TRUE);
}

static void
turned_off(GObject *source, GAsyncResult *result, gpointer user_data)
{
  job_done(user_data);
}

static GArray *
learned_uids(TgServer *server)
{
  GArray *uids = g_array_new(FALSE, FALSE, sizeof(guint32));
  GHashTableIter iter;
  gpointer key;

  g_hash_table_iter_init(&iter, server->learned);
  while (g_hash_table_iter_next(&iter, &key, NULL)) {
    guint32 uid = GPOINTER_TO_UINT(key);
    g_array_append_val(uids, uid);
  }
  return uids;
}

static Job *
job_new(TgServer *server, JobKind kind)
{
  Job *job = g_new0(Job, 1);

  job->server = server;
  job->kind = kind;
  job->policy = tg_policy_ref(server->policy);
  /* the Audit callers so far: this job's audit answers them */
  job->waiters = g_steal_pointer(&server->audit_waiters);
  server->audit_waiters = g_ptr_array_new_with_free_func(g_object_unref);
  server->job = job;
  return job;
}

/* Starts the next job, if one is wanted and none runs. */
static void
kick(TgServer *server)
{
  Job *job;

  if (server->job != NULL)
    return;
  while (!server->active && server->audit_waiters->len > 0) { /* nothing to audit */
    g_autoptr(GTask) waiter = g_ptr_array_steal_index(server->audit_waiters, 0);
    g_task_return_pointer(waiter, g_ptr_array_new_with_free_func(finding_free),
                          (GDestroyNotify)g_ptr_array_unref);
  }
  if (server->want_off) {
    server->want_off = FALSE;
    run_job(job_new(server, JOB_OFF), thread_off, turned_off);
  } else if (server->want_apply && server->active) {
    server->want_apply = FALSE;
    job = job_new(server, JOB_APPLY);
    job->learned = learned_uids(server);
    run_job(job, thread_collect, collected);
  } else if (server->audit_waiters->len > 0) {
    job = job_new(server, JOB_AUDIT);
    job->names = copy_names(server->sftp_users);
    job->notes = server_notes(server);
    job->dropin_error = g_strdup(server->dropin_error);
    run_job(job, thread_check, checked);
  } else if (server->learning == NULL) {
    server->want_apply = FALSE;
    while (server->idle_waiters->len > 0) {
      g_autoptr(GTask) waiter = g_ptr_array_steal_index(server->idle_waiters, 0);
      g_task_return_boolean(waiter, TRUE);
    }
  }
}

/* ---- learning ----
 *
 * Users NSS does not enumerate (directory users) and members of groups it
 * cannot list are found when they first use the network: the kernel drops
 * every packet of a socket whose uid is not in server_known_uids, notes the
 * uid in server_unknown_uids and tells the daemon (the firewall's nflog
 * group, tg_enforcer_set_unknown_handler()). The
 * daemon reads those uids, places them under the policy on a worker and
 * adds them to the sets; TCP sends the dropped SYN again a second later,
 * and it meets the rules of its user. One learning job at a time; packets
 * meanwhile mark it wanted again. */

typedef struct _Learning {
  TgServer *server;
  TgPolicy *policy;
  GArray *uids; /* guint32 */
  Users users;
} Learning;

static void
learning_free(Learning *learning)
{
  users_clear(&learning->users);
  g_array_unref(learning->uids);
  tg_policy_unref(learning->policy);
  g_free(learning);
}

static void
thread_learn(GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
  Learning *learning = task_data;

  for (guint i = 0; i < learning->uids->len; i++)
    place_uid(learning->policy, g_array_index(learning->uids, guint32, i),
              &learning->users);
  g_task_return_boolean(task, TRUE);
}

static void
learned(GObject *source, GAsyncResult *result, gpointer user_data)
{
  Learning *learning = user_data;
  TgServer *server = learning->server;
  Users *users = &learning->users;
  TgFirewallServerUsers sets = users_for_firewall(users);
  g_autoptr(GError) error = NULL;

  server->learning = NULL;
  if (!g_task_propagate_boolean(G_TASK(result), &error)) { /* no thread */
    tg_warning("server mode: cannot place new uids: %s", error->message);
    server->want_learn = TRUE; /* the next packet tries again */
  } else if (server->policy != learning->policy || !server->active) {
    server->want_learn = server->active; /* placed under an old policy */
  } else if (!tg_enforcer_add_server_users(server->enforcer, &sets, &error)) {
    tg_warning("server mode: cannot add new uids to the firewall: %s", error->message);
  } else {
    for (guint i = 0; i < users->known_uids->len; i++) {
      gpointer uid = GUINT_TO_POINTER(g_array_index(users->known_uids, guint32, i));

      g_hash_table_add(server->known, uid);
      g_hash_table_add(server->learned, uid);
    }
    for (guint i = 0; i < users->sftp_names->len; i++)
      g_ptr_array_add(server->sftp_users,
                      g_strdup(g_ptr_array_index(users->sftp_names, i)));
    for (guint i = 0; i < users->placed->len; i++)
      tg_log_event(G_LOG_LEVEL_MESSAGE, "SERVER_USER_PLACED", "MESSAGE",
                   "server mode: %s (first seen by the kernel)",
                   (const char *)g_ptr_array_index(users->placed, i));
  }
  learning_free(learning);
  learn_kick(server);
  kick(server); /* idle waiters */
}

static void
learn_kick(TgServer *server)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GArray) unknown = NULL;
  Learning *learning;
  g_autoptr(GTask) task = NULL;

  if (server->learning != NULL || !server->want_learn || !server->active)
    return;
  server->want_learn = FALSE;
  unknown = tg_enforcer_read_unknown_uids(server->enforcer, &error);
  if (unknown == NULL) {
    tg_warning("server mode: cannot read the unknown uids: %s", error->message);
    return;
  }
  learning = g_new0(Learning, 1);
  learning->uids = g_array_new(FALSE, FALSE, sizeof(guint32));
  for (guint i = 0; i < unknown->len; i++) {
    guint32 uid = g_array_index(unknown, guint32, i);

    if (uid != 0 && !g_hash_table_contains(server->known, GUINT_TO_POINTER(uid)))
      g_array_append_val(learning->uids, uid);
  }
  if (learning->uids->len == 0) {
    g_array_unref(learning->uids);
    g_free(learning);
    return;
  }
  learning->server = server;
  learning->policy = tg_policy_ref(server->policy);
  users_init(&learning->users);
  server->learning = learning;
  task = g_task_new(NULL, NULL, learned, learning);
  g_task_set_task_data(task, learning, NULL);
  tg_worker_run(task, thread_learn);
}

static void
on_unknown(gpointer user_data)
{
  TgServer *server = user_data;

  server->want_learn = TRUE;
  learn_kick(server);
}

static void
learning_stop(TgServer *server)
{
  g_hash_table_remove_all(server->known);
  g_hash_table_remove_all(server->learned);
  server->want_learn = FALSE;
}

/* ---- applying ---- */

static gboolean
resync_timeout(gpointer user_data)
{
  TgServer *server = user_data;

  server->resync_timer = 0;
  tg_message("server mode: users or groups changed; re-reading them");
  server->want_apply = TRUE;
  kick(server);
  return G_SOURCE_REMOVE;
}

static void
on_users_changed(GFileMonitor *monitor, GFile *file, GFile *other,
                 GFileMonitorEvent event, gpointer user_data)
{
  TgServer *server = user_data;

  if (!server->active)
    return;
  tg_debug("server mode: %s changed (event %d)", g_file_peek_path(file), (int)event);
  if (server->resync_timer != 0)
    g_source_remove(server->resync_timer);
  server->resync_timer = g_timeout_add(RESYNC_DELAY_MS, resync_timeout, server);
}

TgServer *
tg_server_new(TgEnforcer *enforcer)
{
  TgServer *server = g_new0(TgServer, 1);
  const char *const files[] = { "/etc/passwd", "/etc/group" };

  server->enforcer = enforcer;
  server->sftp_users = g_ptr_array_new_with_free_func(g_free);
  server->notes = g_ptr_array_new_with_free_func(finding_free);
  server->known = g_hash_table_new(NULL, NULL);
  server->learned = g_hash_table_new(NULL, NULL);
  server->audit_waiters = g_ptr_array_new_with_free_func(g_object_unref);
  server->idle_waiters = g_ptr_array_new_with_free_func(g_object_unref);
  tg_enforcer_set_unknown_handler(enforcer, on_unknown, server);
  for (guint i = 0; i < G_N_ELEMENTS(files); i++) {
    g_autoptr(GFile) file = g_file_new_for_path(files[i]);
    server->monitors[i] =
        g_file_monitor_file(file, G_FILE_MONITOR_WATCH_MOVES, NULL, NULL);
    if (server->monitors[i] != NULL)
      g_signal_connect(server->monitors[i], "changed", G_CALLBACK(on_users_changed),
                       server);
  }
  return server;
}

void
tg_server_free(TgServer *server)
{
  if (server == NULL)
    return;
  for (guint i = 0; i < G_N_ELEMENTS(server->monitors); i++) {
    if (server->monitors[i] != NULL) {
      g_signal_handlers_disconnect_by_data(server->monitors[i], server);
      g_file_monitor_cancel(server->monitors[i]);
      g_object_unref(server->monitors[i]);
    }
  }
  if (server->resync_timer != 0)
    g_source_remove(server->resync_timer);
  /* nothing new starts; the jobs running end on their own (sshd is bounded) */
  server->want_apply = server->want_off = FALSE;
  server->active = FALSE;
  learning_stop(server);
  tg_enforcer_set_unknown_handler(server->enforcer, NULL, NULL);
  while (server->job != NULL || server->learning != NULL)
    g_main_context_iteration(NULL, TRUE);
  g_assert(server->audit_waiters->len == 0 && server->idle_waiters->len == 0);
  g_ptr_array_unref(server->audit_waiters);
  g_ptr_array_unref(server->idle_waiters);
  g_clear_error(&server->apply_error);
  if (server->policy != NULL)
    tg_policy_unref(server->policy);
  g_ptr_array_unref(server->sftp_users);
  g_ptr_array_unref(server->notes);
  g_hash_table_unref(server->known);
  g_hash_table_unref(server->learned);
  g_free(server->dropin_error);
  g_free(server);
}

gboolean
tg_server_is_active(const TgServer *server)
{
  return server->active;
}

void
tg_server_apply_policy(TgServer *server, TgPolicy *policy)
{
  const TgPolicyGlobals *globals = tg_policy_get_globals(policy);

  tg_policy_ref(policy);
  if (server->policy != NULL)
    tg_policy_unref(server->policy);
  server->policy = policy;
  if (!globals->server_mode) {
    if (server->active)
      server->want_off = TRUE;
    server->active = FALSE;
    server->want_apply = FALSE;
    g_clear_error(&server->apply_error);
    g_ptr_array_set_size(server->sftp_users, 0);
    g_ptr_array_set_size(server->notes, 0);
    learning_stop(server);
  } else {
    server->active = TRUE;
    server->want_apply = TRUE;
  }
  kick(server);
}

void
tg_server_wait_async(TgServer *server, GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = g_task_new(NULL, NULL, callback, user_data);

  g_ptr_array_add(server->idle_waiters, task);
  kick(server);
}

gboolean
tg_server_wait_finish(TgServer *server, GAsyncResult *result, GError **error)
{
  if (!g_task_propagate_boolean(G_TASK(result), error))
    return FALSE;
  if (server->apply_error != NULL) {
    g_propagate_error(error, g_error_copy(server->apply_error));
    return FALSE;
  }
  return TRUE;
}

static void
waited(GObject *source, GAsyncResult *result, gpointer user_data)
{
  gboolean *done = user_data;

  *done = TRUE;
}

gboolean
tg_server_wait(TgServer *server, GError **error)
{
  gboolean done = FALSE;

  if (server->job == NULL && !server->want_apply && !server->want_off)
    goto out;
  tg_server_wait_async(server, waited, &done);
  while (!done)
    g_main_context_iteration(NULL, TRUE);
out:
  if (server->apply_error != NULL) {
    g_propagate_error(error, g_error_copy(server->apply_error));
    return FALSE;
  }
  return TRUE;
}

void
tg_server_audit_async(TgServer *server, GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = g_task_new(NULL, NULL, callback, user_data);

  if (!server->active) {
    g_task_return_pointer(task, g_ptr_array_new_with_free_func(finding_free),
                          (GDestroyNotify)g_ptr_array_unref);
    g_object_unref(task);
    return;
  }
  g_ptr_array_add(server->audit_waiters, task);
  kick(server);
}

GPtrArray *
tg_server_audit_finish(GAsyncResult *result, GError **error)
{
  return g_task_propagate_pointer(G_TASK(result), error);
}
