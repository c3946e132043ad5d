/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "manager.h"

#include <unistd.h>

#include "admission.h"
#include "dbus-options.h"
#include "config.h"
#include "gate.h"
#include "hostkey.h"
#include "log.h"
#include "netwatch.h"
#include "opener.h"
#include "restore.h"
#include "text.h"
#include "tg-error.h"
#include "tunnel.h"

#define MAX_DESCRIPTION_LENGTH 256
#define MAX_KEEPALIVE_SECONDS 3600
#define MAX_KEEPALIVE_COUNT 10

/* The ciphers a caller may ask for; libssh's defaults when none is given. */
static const char *const allowed_ciphers[] = {
  "chacha20-poly1305@openssh.com",
  "aes128-gcm@openssh.com",
  "aes256-gcm@openssh.com",
  "aes128-ctr",
  "aes192-ctr",
  "aes256-ctr",
  NULL,
};

/* ---- OpenTunnel ---- */

static gboolean
parse_ciphers(const char *text, GError **error)
{
  g_auto(GStrv) names = g_strsplit(text, ",", -1);

  for (guint i = 0; names[i] != NULL; i++) {
    if (!g_strv_contains(allowed_ciphers, names[i])) {
      g_autofree char *known = g_strjoinv(", ", (char **)allowed_ciphers);
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "Option 'ciphers': unknown or disallowed cipher '%s' (allowed: %s)",
                  names[i], known);
      return FALSE;
    }
  }
  return names[0] != NULL;
}

static gboolean
parse_option(TgOpenRequest *request, GDBusMethodInvocation *invocation, const char *key,
             GVariant *value, GError **error)
{
  if (tg_option_is_credential(key))
    return tg_option_parse_credential(invocation, key, value, &request->agent_path,
                                      &request->agent_fd, &request->identity_path,
                                      &request->identity_fd, error);
  if (g_str_equal(key, "host-key")) {
    if (!tg_option_has_type(key, value, "s", error))
      return FALSE;
    g_free(request->host_key);
    request->host_key = g_variant_dup_string(value, NULL);
    if (!tg_hostkey_fingerprint_is_valid(request->host_key)) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "Option 'host-key' must be a fingerprint like ssh-keygen -l prints "
                  "(SHA256: and 43 base64 characters), not '%s'",
                  request->host_key);
      return FALSE;
    }
    return TRUE;
  }
  if (g_str_equal(key, "keepalive")) {
    if (!tg_option_has_type(key, value, "u", error))
      return FALSE;
    request->keepalive = g_variant_get_uint32(value);
    request->keepalive_given = TRUE;
    if (request->keepalive > MAX_KEEPALIVE_SECONDS) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "Option 'keepalive' must be at most %d seconds, not %u",
                  MAX_KEEPALIVE_SECONDS, request->keepalive);
      return FALSE;
    }
    return TRUE;
  }
  if (g_str_equal(key, "bind-to-caller")) {
    if (!tg_option_has_type(key, value, "b", error))
      return FALSE;
    request->bind_to_caller = g_variant_get_boolean(value);
    return TRUE;
  }
  if (g_str_equal(key, "keepalive-count")) {
    if (!tg_option_has_type(key, value, "u", error))
      return FALSE;
    request->keepalive_count = g_variant_get_uint32(value);
    if (request->keepalive_count < 1 || request->keepalive_count > MAX_KEEPALIVE_COUNT) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "Option 'keepalive-count' must be from 1 to %d, not %u",
                  MAX_KEEPALIVE_COUNT, request->keepalive_count);
      return FALSE;
    }
    return TRUE;
  }
  if (g_str_equal(key, "reconnect") || g_str_equal(key, "persist")) {
    if (!tg_option_has_type(key, value, "b", error))
      return FALSE;
    *(key[0] == 'r' ? &request->reconnect : &request->persist) =
        g_variant_get_boolean(value);
    return TRUE;
  }
  if (g_str_equal(key, "description")) {
    if (!tg_option_has_type(key, value, "s", error))
      return FALSE;
    g_free(request->description);
    request->description = g_variant_dup_string(value, NULL);
    if (strlen(request->description) > MAX_DESCRIPTION_LENGTH) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "Option 'description' is longer than %d bytes", MAX_DESCRIPTION_LENGTH);
      return FALSE;
    }
    if (tg_text_find_control(request->description, -1, NULL, NULL) != NULL) {
      g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                          "Option 'description' contains control characters");
      return FALSE;
    }
    return TRUE;
  }
  if (g_str_equal(key, "ciphers")) {
    if (!tg_option_has_type(key, value, "s", error))
      return FALSE;
    g_free(request->ciphers);
    request->ciphers = g_variant_dup_string(value, NULL);
    return parse_ciphers(request->ciphers, error);
  }
  g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
              "Unknown option '%s' (known: agent, agent-fd, identity, identity-fd, "
              "host-key, keepalive, keepalive-count, reconnect, persist, bind-to-caller, "
              "description, ciphers)",
              key);
  return FALSE;
}

/* persist: the daemon must be able to open the tunnel again by itself,
 * after a restart, with nobody calling. */
static gboolean
check_persist(TgOpenRequest *request, gboolean reconnect_given, GError **error)
{
  const char *problem = NULL;

  if (request->agent_fd >= 0 || request->identity_fd >= 0)
    problem = "needs credentials the daemon can open again after a restart: the "
              "options agent or identity (a path), or a profile; a descriptor "
              "(agent-fd, identity-fd) does not outlive the daemon";
  else if (request->bind_to_caller)
    problem = "cannot be used with bind-to-caller: a tunnel restored after a restart "
              "has no caller";
  else if (reconnect_given && !request->reconnect)
    problem = "implies reconnect; it cannot be used with reconnect false";
  if (problem == NULL)
    return TRUE;
  g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "Option 'persist' %s", problem);
  return FALSE;
}

static TgOpenRequest *
open_request_parse(TgDaemon *daemon, GDBusMethodInvocation *invocation,
                   GVariant *parameters, GError **error)
{
  TgOpenRequest *request = tg_open_request_new(daemon);
  g_autoptr(GVariantIter) forwards = NULL;
  g_autoptr(GVariantIter) options = NULL;
  const char *destination, *spec, *key;
  GVariant *value;
  guint credentials = 0;
  gboolean reconnect_given = FALSE;

  g_variant_get(parameters, "(&sasa{sv})", &destination, &forwards, &options);

  request->destination = tg_destination_parse(destination, error);
  if (request->destination == NULL)
    goto fail;
  if (request->destination->profile != NULL && g_variant_iter_n_children(forwards) > 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "Destination '%s' is a profile, which defines its own forwards; "
                "pass no forwards",
                destination);
    goto fail;
  }
  if (g_variant_iter_n_children(forwards) > TG_MAX_FORWARDS_PER_TUNNEL) {
    g_set_error(error, TG_ERROR, TG_ERROR_LIMIT_EXCEEDED,
                "At most %d forwards per tunnel", TG_MAX_FORWARDS_PER_TUNNEL);
    goto fail;
  }
  while (g_variant_iter_next(forwards, "&s", &spec)) {
    TgForward *forward = tg_forward_parse(spec, error);
    if (forward == NULL)
      goto fail;
    g_ptr_array_add(request->forwards, forward);
    if (!tg_admission_forward_is_served(forward, error))
      goto fail;
  }
  while (g_variant_iter_next(options, "{&sv}", &key, &value)) {
    gboolean ok = parse_option(request, invocation, key, value, error);
    reconnect_given |= g_str_equal(key, "reconnect");
    g_variant_unref(value);
    if (!ok)
      goto fail;
  }
  if (request->persist && !check_persist(request, reconnect_given, error))
    goto fail;

  credentials = (request->agent_path != NULL) + (request->agent_fd >= 0) +
                (request->identity_path != NULL) + (request->identity_fd >= 0);
  if (request->destination->profile != NULL) {
    if (credentials == 0 && request->host_key == NULL)
      return request;
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "Destination '%s' is a profile, which brings its own key and host "
                "key; the options agent, agent-fd, identity, identity-fd and host-key "
                "cannot be used with it",
                destination);
    goto fail;
  }
  if (credentials != 1) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                credentials == 0
                    ? "No credentials: pass one of the options agent, agent-fd, "
                      "identity or identity-fd"
                    : "Pass only one of the options agent, agent-fd, identity and "
                      "identity-fd");
    goto fail;
  }
  return request;

fail:
  tg_open_request_free(request);
  return NULL;
}

/* The caller's identity for the policy: user, uid and every group. */
static TgPolicySubject *
caller_subject(TgCall *call)
{
  g_autoptr(GError) error = NULL;
  TgPolicySubject *subject = tg_policy_subject_from_uid(call->caller->uid, &error);

  if (subject == NULL) {
    g_autoptr(GError) denial = g_error_new(TG_ERROR, TG_ERROR_NOT_AUTHORIZED,
                                           "Cannot look up the groups of uid %u: %s",
                                           (unsigned)call->caller->uid, error->message);
    tg_call_return_error(call, denial);
  }
  return subject;
}

static gboolean
open_decide(TgCall *call)
{
  TgOpenRequest *request = call->data;
  g_autoptr(GPtrArray) specs = g_ptr_array_new();
  GVariantBuilder details;
  g_autofree char *destination = NULL;
  g_autofree char *joined = NULL;
  g_autofree char *count = NULL;
  gboolean separable = TRUE;

  request->subject = caller_subject(call);
  if (request->subject == NULL)
    return FALSE;

  g_variant_builder_init(&details, G_VARIANT_TYPE("a{ss}"));
  if (request->destination->profile != NULL) {
    /* the administrator sanctioned the profile's forwards: use-profile
     * instead of open */
    call->required = (call->required & ~TG_ACTION_OPEN) | TG_ACTION_USE_PROFILE;
    g_variant_builder_add(&details, "{ss}", "profile", request->destination->profile);
    call->details = g_variant_ref_sink(g_variant_builder_end(&details));
    return TRUE;
  }

  for (guint i = 0; i < request->forwards->len; i++) {
    const TgForward *forward = g_ptr_array_index(request->forwards, i);
    call->required |=
        tg_admission_forward_actions(request->daemon->policy, request->subject, forward);
    g_ptr_array_add(specs, forward->spec);
    separable &= strchr(forward->spec, ';') == NULL;
  }
  g_ptr_array_add(specs, NULL);
  joined = g_strjoinv(";", (char **)specs->pdata);
  count = g_strdup_printf("%u", request->forwards->len);
  destination = tg_open_destination_text(
      request->destination->user != NULL ? request->destination->user
                                         : call->caller->user_name,
      request->destination->host, request->destination->port);

  /* polkit rules may look at these: action.lookup("destination") */
  g_variant_builder_add(&details, "{ss}", "destination", destination);
  g_variant_builder_add(&details, "{ss}", "forward.count", count);
  for (guint i = 0; i < request->forwards->len; i++) {
    g_autofree char *key = g_strdup_printf("forward.%u", i);
    g_variant_builder_add(&details, "{ss}", key, (const char *)specs->pdata[i]);
  }
  /* the joined form only when a ';' in a socket path cannot make one
   * forward read as two */
  if (separable)
    g_variant_builder_add(&details, "{ss}", "forwards", joined);
  call->details = g_variant_ref_sink(g_variant_builder_end(&details));
  return TRUE;
}

/* The tunnel made, or why not: the caller's answer (the invocation went
 * to the tunnel, which answers when it is up). */
static void
open_done(TgOpenRequest *request, TgTunnel *tunnel, const GError *error,
          gpointer user_data)
{
  g_autoptr(TgCall) call = user_data;

  if (error != NULL) {
    call->invocation = g_steal_pointer(&request->invocation);
    tg_call_return_error(call, error);
  }
}

static void
open_act(TgCall *call)
{
  TgOpenRequest *request = call->data;

  request->owner = tg_caller_copy(call->caller);
  request->granted = call->granted;
  request->invocation = g_steal_pointer(&call->invocation);
  tg_open_request_run(request, open_done, tg_call_keep(call));
}

/* ---- CloseTunnel, ListTunnels, GetManagedObjects ---- */

static gboolean
list_decide(TgCall *call)
{
  call->optional = TG_ACTION_MANAGE; /* to see other users' tunnels */
  return TRUE;
}

/* The caller's tunnels, and with manage everyone's, in creation order. */
static GPtrArray *
visible_tunnels(TgDaemon *daemon, TgCall *call)
{
  return tg_registry_visible_tunnels(daemon->registry, call->caller->uid,
                                     (call->granted & TG_ACTION_MANAGE) != 0);
}

static void
list_act(TgCall *call)
{
  TgDaemon *daemon = call->data;
  g_autoptr(GPtrArray) tunnels = visible_tunnels(daemon, call);
  GVariantBuilder builder;

  g_variant_builder_init(&builder, G_VARIANT_TYPE("a(osussas)"));
  for (guint i = 0; i < tunnels->len; i++)
    g_variant_builder_add_value(&builder, tg_tunnel_summary(tunnels->pdata[i]));
  tg_call_return_value(call,
                       g_variant_new("(@a(osussas))", g_variant_builder_end(&builder)));
}

static void
managed_objects_act(TgCall *call)
{
  TgDaemon *daemon = call->data;
  g_autoptr(GPtrArray) tunnels = visible_tunnels(daemon, call);
  GVariantBuilder builder;

  g_variant_builder_init(&builder, G_VARIANT_TYPE("a{oa{sa{sv}}}"));
  for (guint i = 0; i < tunnels->len; i++)
    g_variant_builder_add(&builder, "{o@a{sa{sv}}}",
                          tg_tunnel_get_path(tunnels->pdata[i]),
                          tg_tunnel_interfaces(tunnels->pdata[i]));
  tg_call_return_value(
      call, g_variant_new("(@a{oa{sa{sv}}})", g_variant_builder_end(&builder)));
}

/* ---- CheckForward, ReloadPolicy ---- */

typedef struct {
  TgDaemon *daemon;
  TgDestination *destination;
  TgForward *forward;
} CheckRequest;

static void
check_request_free(gpointer data)
{
  CheckRequest *request = data;

  tg_destination_free(request->destination);
  tg_forward_free(request->forward);
  g_free(request);
}

static void
check_act(TgCall *call)
{
  CheckRequest *request = call->data;
  g_autoptr(TgPolicySubject) subject = caller_subject(call);
  g_autoptr(TgPolicyDecision) decision = NULL;

  if (subject == NULL)
    return;
  decision = tg_gate_check_forward(request->daemon, subject, request->destination->host,
                                   request->destination->port, request->forward);
  tg_call_return_value(call, g_variant_new("(bs)", decision->allowed, decision->reason));
}

static void
reload_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
  TgCall *call = user_data;
  TgDaemon *daemon = call->data;

  tg_server_wait_finish(daemon->server, result, NULL);
  tg_call_return_value(call, NULL);
  tg_call_free(call);
}

static void
reload_act(TgCall *call)
{
  TgDaemon *daemon = call->data;
  g_autoptr(GError) error = NULL;

  tg_log_event(G_LOG_LEVEL_MESSAGE, "POLICY_RELOAD", "USER", call->caller->user_name,
               "MESSAGE", "ReloadPolicy() by %s (uid %u)", call->caller->user_name,
               (unsigned)call->caller->uid);
  if (!tg_manager_reload(daemon, &error)) {
    tg_call_return_error(call, error);
    return;
  }
  /* answered once server mode has the new policy in force too; its
   * failures are logged, the policy stays */
  tg_server_wait_async(daemon->server, reload_done, tg_call_keep(call));
}

static void
firewall_act(TgCall *call)
{
  TgDaemon *daemon = call->data;
  g_autofree char *text = tg_enforcer_describe(daemon->enforcer);

  tg_call_return_value(call, g_variant_new("(s)", text));
}

static void
audit_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
  TgCall *call = user_data;
  g_autoptr(GPtrArray) findings = tg_server_audit_finish(result, NULL);
  GVariantBuilder builder;

  g_variant_builder_init(&builder, G_VARIANT_TYPE("a(sss)"));
  for (guint i = 0; i < findings->len; i++) {
    const TgServerFinding *finding = g_ptr_array_index(findings, i);
    g_variant_builder_add(&builder, "(sss)", finding->user, finding->setting,
                          finding->value);
  }
  tg_call_return_value(call, g_variant_new("(a(sss))", &builder));
  tg_call_free(call);
}

static void
audit_act(TgCall *call)
{
  TgDaemon *daemon = call->data;

  tg_server_audit_async(daemon->server, audit_done, tg_call_keep(call));
}

/* ---- dispatch ---- */

static void
manager_method_call(GDBusConnection *connection, const char *sender, const char *path,
                    const char *interface, const char *method, GVariant *parameters,
                    GDBusMethodInvocation *invocation, gpointer user_data)
{
  TgDaemon *daemon = user_data;
  g_autoptr(GError) error = NULL;
  TgAction action;
  TgCall *call;

  if (!tg_authz_method_action(interface, method, &action)) {
    g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR,
                                          G_DBUS_ERROR_UNKNOWN_METHOD, "No method %s.%s",
                                          interface, method);
    return;
  }

  if (g_str_equal(method, "OpenTunnel")) {
    TgOpenRequest *request = open_request_parse(daemon, invocation, parameters, &error);
    if (request == NULL) {
      g_dbus_method_invocation_return_gerror(invocation, error);
      return;
    }
    call = tg_call_new(invocation, action);
    call->data = request;
    call->free_data = (GDestroyNotify)tg_open_request_free;
    call->decide = open_decide;
    call->act = open_act;
  } else if (g_str_equal(method, "CloseTunnel")) {
    const char *tunnel_path;
    g_variant_get(parameters, "(&o)", &tunnel_path);
    tg_tunnel_authorize_close(daemon, tunnel_path, action, invocation);
    return;
  } else if (g_str_equal(method, "CheckForward")) {
    const char *destination, *spec;
    g_autoptr(TgDestination) parsed_destination = NULL;
    g_autoptr(TgForward) forward = NULL;

    g_variant_get(parameters, "(&s&s)", &destination, &spec);
    parsed_destination = tg_destination_parse(destination, &error);
    if (parsed_destination != NULL)
      forward = tg_forward_parse(spec, &error);
    if (forward == NULL) {
      g_dbus_method_invocation_return_gerror(invocation, error);
      return;
    }
    if (parsed_destination->profile != NULL) {
      g_dbus_method_invocation_return_error(
          invocation, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
          "CheckForward takes a destination [user@]host[:port], not a profile");
      return;
    }
    CheckRequest *request = g_new0(CheckRequest, 1);
    request->daemon = daemon;
    request->destination = g_steal_pointer(&parsed_destination);
    request->forward = g_steal_pointer(&forward);
    call = tg_call_new(invocation, action);
    call->data = request;
    call->free_data = check_request_free;
    call->act = check_act;
  } else {
    call = tg_call_new(invocation, action);
    call->data = daemon;
    if (g_str_equal(method, "ReloadPolicy")) {
      call->act = reload_act;
    } else if (g_str_equal(method, "Audit")) {
      call->act = audit_act;
    } else if (g_str_equal(method, "GetFirewall")) {
      call->act = firewall_act;
    } else {
      call->decide = list_decide;
      call->act = g_str_equal(method, "ListTunnels") ? list_act : managed_objects_act;
    }
  }
  tg_authz_run(daemon->authz, call);
}

/* Manager1's properties are public (TG_ACTION_NONE in the table). */
static GVariant *
manager_get_property(GDBusConnection *connection, const char *sender, const char *path,
                     const char *interface, const char *name, GError **error,
                     gpointer user_data)
{
  if (g_str_equal(name, "Version"))
    return g_variant_new_string(PACKAGE_VERSION);
  if (g_str_equal(name, "PolicyFiles"))
    return g_variant_new_strv(tg_policy_get_files(((TgDaemon *)user_data)->policy), -1);
  if (g_str_equal(name, "Enforcing"))
    return g_variant_new_boolean(
        tg_enforcer_is_enforcing(((TgDaemon *)user_data)->enforcer));
  g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_PROPERTY, "No property %s", name);
  return NULL;
}

static const GDBusInterfaceVTable manager_vtable = {
  .method_call = manager_method_call,
  .get_property = manager_get_property,
};

static const GDBusInterfaceVTable object_manager_vtable = {
  .method_call = manager_method_call,
};

static gboolean
publish_counters(gpointer user_data)
{
  TgDaemon *daemon = user_data;
  g_autoptr(GPtrArray) tunnels = tg_registry_list_tunnels(daemon->registry);

  for (guint i = 0; i < tunnels->len; i++)
    tg_tunnel_publish_counters(tunnels->pdata[i]);
  return G_SOURCE_CONTINUE;
}

/* ---- ReloadPolicy, SIGHUP ---- */

/* An owner as NSS gives them at this reload: looked up once per uid, not
 * once per tunnel (each lookup reads /etc/passwd and /etc/group). */
typedef struct {
  TgPolicySubject *subject; /* NULL: the lookup failed */
  char *error;
} OwnerLookup;

static void
owner_lookup_free(OwnerLookup *lookup)
{
  tg_policy_subject_free(lookup->subject);
  g_free(lookup->error);
  g_free(lookup);
}

static const OwnerLookup *
lookup_owner(GHashTable *owners, uid_t uid)
{
  OwnerLookup *lookup = g_hash_table_lookup(owners, GUINT_TO_POINTER(uid));

  if (lookup == NULL) {
    g_autoptr(GError) error = NULL;

    lookup = g_new0(OwnerLookup, 1);
    lookup->subject = tg_policy_subject_from_uid(uid, &error);
    if (lookup->subject == NULL)
      lookup->error = g_strdup(error->message);
    g_hash_table_insert(owners, GUINT_TO_POINTER(uid), lookup);
  }
  return lookup;
}

gboolean
tg_manager_reload(TgDaemon *daemon, GError **error)
{
  TgPolicy *fresh = tg_gate_load(daemon, error);
  g_autoptr(GPtrArray) tunnels = NULL;
  g_autoptr(GHashTable) owners = NULL;

  if (fresh == NULL)
    return FALSE;
  if (!tg_enforcer_apply_policy(daemon->enforcer, fresh, error)) {
    g_prefix_error(error, "The new policy asks for a firewall that cannot be installed; "
                          "the old policy stays in force: ");
    tg_policy_unref(fresh);
    return FALSE;
  }
  g_clear_pointer(&daemon->policy, tg_policy_unref);
  daemon->policy = fresh;
  tg_server_apply_policy(daemon->server, fresh);
  tg_log_event(G_LOG_LEVEL_MESSAGE, "POLICY_RELOADED", "MESSAGE",
               "policy reloaded; re-checking %u tunnels",
               tg_registry_n_tunnels(daemon->registry));

  /* each tunnel re-checks itself; closing one may free it: walk a copy */
  tunnels = tg_registry_list_tunnels(daemon->registry);
  owners = g_hash_table_new_full(NULL, NULL, NULL, (GDestroyNotify)owner_lookup_free);
  for (guint i = 0; i < tunnels->len; i++) {
    const OwnerLookup *owner =
        lookup_owner(owners, tg_tunnel_get_owner(tunnels->pdata[i]));
    tg_tunnel_recheck(tunnels->pdata[i], owner->subject, owner->error);
  }
  tg_restore_autostart(daemon); /* added, or switched on */
  return TRUE;
}

void
tg_manager_close_all(TgDaemon *daemon)
{
  g_autoptr(GPtrArray) tunnels = tg_registry_list_tunnels(daemon->registry);

  tg_registry_stop(daemon->registry);
  for (guint i = 0; i < tunnels->len; i++)
    tg_tunnel_close(tunnels->pdata[i], "the daemon is stopping", NULL);
  /* each worker reports CLOSED through the main context; wait for them all,
   * and for calls waiting on the resolver (they are refused when it answers) */
  while (tg_registry_n_tunnels(daemon->registry) > 0 ||
         tg_registry_n_resolving(daemon->registry) > 0)
    g_main_context_iteration(NULL, TRUE);
}

struct _TgManager {
  TgDaemon *daemon;
  guint manager_registration;
  guint object_manager_registration;
  guint counters_timer;
  guint tunnels_registration; /* the subtree of tunnel objects */
  TgNetwatch *netwatch;       /* network changes, sleep and resume; may be NULL */
  guint sleep_timer;          /* going to sleep: waits for the tunnels to close */
  gint64 sleep_since;
};

/* ---- the network and sleep (netwatch.h) ---- */

#define SLEEP_POLL_MS 50
#define SLEEP_WAIT_USEC (2 * G_USEC_PER_SEC) /* logind's delay limit is 5 s */

/* Going to sleep: once every tunnel with reconnect has closed its session
 * (or has none), or after SLEEP_WAIT_USEC, the system may sleep. */
static gboolean
sleep_when_closed(gpointer user_data)
{
  TgManager *manager = user_data;
  g_autoptr(GPtrArray) tunnels = tg_registry_list_tunnels(manager->daemon->registry);
  gboolean ready = TRUE;

  for (guint i = 0; i < tunnels->len && ready; i++)
    ready = tg_tunnel_ready_for_sleep(tunnels->pdata[i]);
  if (!ready && g_get_monotonic_time() - manager->sleep_since < SLEEP_WAIT_USEC)
    return G_SOURCE_CONTINUE;
  tg_log_event(G_LOG_LEVEL_MESSAGE, "SLEEP_READY", "MESSAGE", "%s; the system may sleep",
               ready ? "every reconnecting tunnel is closed for sleep"
                     : "not every tunnel closed in time");
  tg_netwatch_release_sleep(manager->netwatch);
  manager->sleep_timer = 0;
  return G_SOURCE_REMOVE;
}

static void
on_netwatch(TgNetwatchEvent event, const char *cause, gpointer user_data)
{
  TgManager *manager = user_data;
  g_autoptr(GPtrArray) tunnels = tg_registry_list_tunnels(manager->daemon->registry);

  switch (event) {
  case TG_NETWATCH_NETWORK_CHANGED:
    tg_log_event(G_LOG_LEVEL_MESSAGE, "NETWORK_CHANGED", "CAUSE", cause, "MESSAGE",
                 "the network changed (%s): reconnecting tunnels try at once, the "
                 "others are asked for a sign of life",
                 cause);
    for (guint i = 0; i < tunnels->len; i++)
      tg_tunnel_network_changed(tunnels->pdata[i]);
    break;
  case TG_NETWATCH_SLEEPING:
    tg_log_event(G_LOG_LEVEL_MESSAGE, "SLEEPING", "MESSAGE",
                 "the system is going to sleep: closing the sessions of tunnels with "
                 "reconnect");
    for (guint i = 0; i < tunnels->len; i++)
      tg_tunnel_sleep(tunnels->pdata[i], TRUE);
    manager->sleep_since = g_get_monotonic_time();
    g_clear_handle_id(&manager->sleep_timer, g_source_remove);
    if (sleep_when_closed(manager) == G_SOURCE_CONTINUE)
      manager->sleep_timer = g_timeout_add(SLEEP_POLL_MS, sleep_when_closed, manager);
    break;
  case TG_NETWATCH_RESUMED:
    tg_log_event(G_LOG_LEVEL_MESSAGE, "RESUMED", "MESSAGE",
                 "the system resumed: tunnels with reconnect connect again");
    g_clear_handle_id(&manager->sleep_timer, g_source_remove);
    for (guint i = 0; i < tunnels->len; i++)
      tg_tunnel_sleep(tunnels->pdata[i], FALSE);
    break;
  }
}

TgManager *
tg_manager_export(TgDaemon *daemon, GError **error)
{
  TgManager *manager = g_new0(TgManager, 1);

  manager->daemon = daemon;
  manager->manager_registration = g_dbus_connection_register_object(
      daemon->bus, TG_MANAGER_PATH, tg_daemon_interface(daemon, TG_MANAGER_INTERFACE),
      &manager_vtable, daemon, NULL, error);
  if (manager->manager_registration != 0)
    manager->object_manager_registration = g_dbus_connection_register_object(
        daemon->bus, TG_MANAGER_PATH,
        tg_daemon_interface(daemon, TG_DBUS_OBJECT_MANAGER_INTERFACE),
        &object_manager_vtable, daemon, NULL, error);
  if (manager->object_manager_registration != 0)
    manager->tunnels_registration = tg_tunnel_register_subtree(daemon, error);
  if (manager->tunnels_registration == 0) {
    tg_manager_unexport(manager);
    return NULL;
  }
  /* counters change on the hot path; they are announced once a second */
  manager->counters_timer = g_timeout_add_seconds(1, publish_counters, daemon);
  {
    g_autoptr(GError) watch_error = NULL;

    manager->netwatch =
        tg_netwatch_new(daemon->bus, TRUE, on_netwatch, manager, &watch_error);
    if (manager->netwatch == NULL)
      tg_log_event(G_LOG_LEVEL_WARNING, "NETWORK_WATCH_FAILED", "MESSAGE",
                   "cannot watch the network (%s): reconnecting tunnels wait for "
                   "their next attempt instead of trying when it changes",
                   watch_error->message);
  }
  return manager;
}

void
tg_manager_unexport(TgManager *manager)
{
  GDBusConnection *bus = manager->daemon->bus;

  g_clear_handle_id(&manager->counters_timer, g_source_remove);
  g_clear_handle_id(&manager->sleep_timer, g_source_remove);
  if (manager->netwatch != NULL) {
    tg_netwatch_free(manager->netwatch);
    /* a cancelled Inhibit call completes in the main context */
    while (g_main_context_iteration(NULL, FALSE))
      ;
  }
  if (manager->tunnels_registration != 0)
    g_dbus_connection_unregister_subtree(bus, manager->tunnels_registration);
  if (manager->object_manager_registration != 0)
    g_dbus_connection_unregister_object(bus, manager->object_manager_registration);
  if (manager->manager_registration != 0)
    g_dbus_connection_unregister_object(bus, manager->manager_registration);
  g_free(manager);
}
