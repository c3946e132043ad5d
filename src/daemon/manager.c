/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "manager.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <unistd.h>

#include "config.h"
#include "hostkey.h"
#include "listener.h"
#include "log.h"
#include "policy-gate.h"
#include "profile.h"
#include "tg-error.h"
#include "tunnel.h"

#define MAX_DESCRIPTION_LENGTH 256
#define MAX_KEEPALIVE_SECONDS 3600

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

GDBusInterfaceInfo *
tg_daemon_interface(TgDaemon *daemon, const char *name)
{
  return g_dbus_node_info_lookup_interface(daemon->introspection, name);
}

TgTunnel *
tg_daemon_find_tunnel(TgDaemon *daemon, const char *path)
{
  if (!g_str_has_prefix(path, TG_TUNNEL_PATH_PREFIX))
    return NULL;
  return g_hash_table_lookup(daemon->tunnels, path + strlen(TG_TUNNEL_PATH_PREFIX));
}

/* ---- OpenTunnel ---- */

typedef struct {
  TgDaemon *daemon;
  TgDestination *destination;
  GPtrArray *forwards; /* TgForward* */
  char *agent_path;
  int agent_fd;
  char *identity_path;
  int identity_fd;
  char *host_key;
  char *ciphers;
  char *description;
  guint32 keepalive;
  gboolean bind_to_caller;
  TgPolicySubject *subject; /* the caller, for the policy; set in decide() */
  TgSessionConfig *config;  /* being filled in act() */
} OpenRequest;

static void
open_request_free(gpointer data)
{
  OpenRequest *request = data;

  tg_destination_free(request->destination);
  g_ptr_array_unref(request->forwards);
  g_free(request->agent_path);
  if (request->agent_fd >= 0)
    close(request->agent_fd);
  g_free(request->identity_path);
  if (request->identity_fd >= 0)
    close(request->identity_fd);
  g_free(request->host_key);
  g_free(request->ciphers);
  g_free(request->description);
  tg_policy_subject_free(request->subject);
  g_clear_pointer(&request->config, tg_session_config_free);
  g_free(request);
}

static gboolean
option_has_type(const char *key, GVariant *value, const char *type, GError **error)
{
  if (g_variant_is_of_type(value, G_VARIANT_TYPE(type)))
    return TRUE;
  g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
              "Option '%s' must be of type '%s', not '%s'", key, type,
              g_variant_get_type_string(value));
  return FALSE;
}

static int
option_take_fd(GDBusMethodInvocation *invocation, const char *key, GVariant *value,
               GError **error)
{
  GUnixFDList *fds =
      g_dbus_message_get_unix_fd_list(g_dbus_method_invocation_get_message(invocation));
  gint32 index = g_variant_get_handle(value);

  if (fds == NULL || index < 0 || index >= g_unix_fd_list_get_length(fds)) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "Option '%s' refers to descriptor %d, but the message carries %d", key,
                index, fds != NULL ? g_unix_fd_list_get_length(fds) : 0);
    return -1;
  }
  return g_unix_fd_list_get(fds, index, error);
}

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
parse_option(OpenRequest *request, GDBusMethodInvocation *invocation, const char *key,
             GVariant *value, GError **error)
{
  if (g_str_equal(key, "agent") || g_str_equal(key, "identity")) {
    if (!option_has_type(key, value, "s", error))
      return FALSE;
    char **target = key[0] == 'a' ? &request->agent_path : &request->identity_path;
    g_free(*target);
    *target = g_variant_dup_string(value, NULL);
    if ((*target)[0] != '/') {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "Option '%s' must be an absolute path, not '%s'", key, *target);
      return FALSE;
    }
    return TRUE;
  }
  if (g_str_equal(key, "agent-fd") || g_str_equal(key, "identity-fd")) {
    if (!option_has_type(key, value, "h", error))
      return FALSE;
    int *target = key[0] == 'a' ? &request->agent_fd : &request->identity_fd;
    if (*target >= 0)
      close(*target);
    *target = option_take_fd(invocation, key, value, error);
    return *target >= 0;
  }
  if (g_str_equal(key, "host-key")) {
    if (!option_has_type(key, value, "s", error))
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
    if (!option_has_type(key, value, "u", error))
      return FALSE;
    request->keepalive = g_variant_get_uint32(value);
    if (request->keepalive > MAX_KEEPALIVE_SECONDS) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "Option 'keepalive' must be at most %d seconds, not %u",
                  MAX_KEEPALIVE_SECONDS, request->keepalive);
      return FALSE;
    }
    return TRUE;
  }
  if (g_str_equal(key, "bind-to-caller")) {
    if (!option_has_type(key, value, "b", error))
      return FALSE;
    request->bind_to_caller = g_variant_get_boolean(value);
    return TRUE;
  }
  if (g_str_equal(key, "reconnect")) {
    if (!option_has_type(key, value, "b", error))
      return FALSE;
    if (g_variant_get_boolean(value)) {
      g_set_error_literal(error, TG_ERROR, TG_ERROR_NOT_SUPPORTED,
                          "Option 'reconnect' is not supported yet");
      return FALSE;
    }
    return TRUE;
  }
  if (g_str_equal(key, "description")) {
    if (!option_has_type(key, value, "s", error))
      return FALSE;
    g_free(request->description);
    request->description = g_variant_dup_string(value, NULL);
    if (strlen(request->description) > MAX_DESCRIPTION_LENGTH) {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "Option 'description' is longer than %d bytes", MAX_DESCRIPTION_LENGTH);
      return FALSE;
    }
    for (const char *p = request->description; *p != '\0'; p++) {
      if ((unsigned char)*p < 0x20 || *p == 0x7f) {
        g_set_error_literal(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                            "Option 'description' contains control characters");
        return FALSE;
      }
    }
    return TRUE;
  }
  if (g_str_equal(key, "ciphers")) {
    if (!option_has_type(key, value, "s", error))
      return FALSE;
    g_free(request->ciphers);
    request->ciphers = g_variant_dup_string(value, NULL);
    return parse_ciphers(request->ciphers, error);
  }
  g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
              "Unknown option '%s' (known: agent, agent-fd, identity, identity-fd, "
              "host-key, keepalive, reconnect, bind-to-caller, description, ciphers)",
              key);
  return FALSE;
}

/* Forward kinds this version serves. The parser knows every OpenSSH form;
 * what is not served yet is refused by name rather than half done. */
gboolean
tg_daemon_forward_is_served(const TgForward *forward, GError **error)
{
  const char *missing = NULL;

  if (forward->kind == TG_FORWARD_REMOTE && forward->remote_dynamic)
    missing = "remote dynamic (R port, SOCKS on the server) forwards";
  else if (forward->kind == TG_FORWARD_REMOTE && forward->listen.path != NULL) {
    g_set_error(error, TG_ERROR, TG_ERROR_NOT_SUPPORTED,
                "Forward '%s': remote Unix-socket forwarding "
                "(streamlocal-forward@openssh.com) has no client API in libssh 0.10, "
                "which tunnelgate uses; forward a remote TCP port instead",
                forward->spec);
    return FALSE;
  } else if (forward->kind == TG_FORWARD_REMOTE && forward->connect.path != NULL)
    missing = "remote forwards to a local Unix socket";
  if (missing == NULL)
    return TRUE;
  g_set_error(error, TG_ERROR, TG_ERROR_NOT_SUPPORTED,
              "Forward '%s': %s are not supported yet", forward->spec, missing);
  return FALSE;
}

static OpenRequest *
open_request_parse(TgDaemon *daemon, GDBusMethodInvocation *invocation,
                   GVariant *parameters, GError **error)
{
  OpenRequest *request = g_new0(OpenRequest, 1);
  g_autoptr(GVariantIter) forwards = NULL;
  g_autoptr(GVariantIter) options = NULL;
  const char *destination, *spec, *key;
  GVariant *value;
  guint credentials = 0;

  request->daemon = daemon;
  request->agent_fd = request->identity_fd = -1;
  request->forwards = g_ptr_array_new_with_free_func((GDestroyNotify)tg_forward_free);
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
    if (!tg_daemon_forward_is_served(forward, error))
      goto fail;
  }
  while (g_variant_iter_next(options, "{&sv}", &key, &value)) {
    gboolean ok = parse_option(request, invocation, key, value, error);
    g_variant_unref(value);
    if (!ok)
      goto fail;
  }

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
  open_request_free(request);
  return NULL;
}

/* "user@host:port", IPv6 addresses in brackets, as Destination shows it. */
static char *
destination_text(const char *user, const char *host, guint16 port)
{
  gboolean ipv6 = strchr(host, ':') != NULL;

  return g_strdup_printf("%s@%s%s%s:%u", user, ipv6 ? "[" : "", host, ipv6 ? "]" : "",
                         port);
}

TgAction
tg_daemon_forward_actions(TgDaemon *daemon, const TgPolicySubject *subject,
                          const TgForward *forward)
{
  if (forward->kind == TG_FORWARD_REMOTE)
    return TG_ACTION_OPEN_REMOTE;
  if (forward->listen.path != NULL)
    return TG_ACTION_NONE; /* a socket file of the caller's, mode 0600 */
  if (!tg_forward_listens_on_loopback_only(forward) ||
      tg_policy_forward_listens_on_all_addresses(daemon->policy, subject, forward))
    return TG_ACTION_BIND_ANY;
  return TG_ACTION_NONE;
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
  OpenRequest *request = call->data;
  g_autoptr(GPtrArray) specs = g_ptr_array_new();
  GVariantBuilder details;
  g_autofree char *destination = NULL;
  g_autofree char *joined = NULL;

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
        tg_daemon_forward_actions(request->daemon, request->subject, forward);
    g_ptr_array_add(specs, forward->spec);
  }
  g_ptr_array_add(specs, NULL);
  joined = g_strjoinv(";", (char **)specs->pdata);
  destination =
      destination_text(request->destination->user != NULL ? request->destination->user
                                                          : call->caller->user_name,
                       request->destination->host, request->destination->port);

  /* polkit rules may look at these: action.lookup("destination") */
  g_variant_builder_add(&details, "{ss}", "destination", destination);
  g_variant_builder_add(&details, "{ss}", "forwards", joined);
  call->details = g_variant_ref_sink(g_variant_builder_end(&details));
  return TRUE;
}

/* A profile replaces the destination, the forwards and the credentials with
 * the administrator's; the user never sees the key. */
static gboolean
apply_profile(OpenRequest *request, TgSessionConfig *config, GError **error)
{
  TgDaemon *daemon = request->daemon;
  g_autofree char *dir = g_build_filename(daemon->config_dir, "profiles.d", NULL);
  g_autoptr(TgProfile) profile = NULL;
  g_autoptr(GError) local_error = NULL;
  int fd;

  profile = tg_profile_load(dir, request->destination->profile, &local_error);
  if (profile == NULL) {
    if (g_error_matches(local_error, G_FILE_ERROR, G_FILE_ERROR_NOENT) ||
        g_error_matches(local_error, TG_ERROR, TG_ERROR_NOT_FOUND))
      g_set_error(error, TG_ERROR, TG_ERROR_NOT_FOUND, "No tunnel profile '%s'",
                  request->destination->profile);
    else
      g_propagate_error(error, g_steal_pointer(&local_error));
    return FALSE;
  }
  if (!tg_gate_check_profile(request->subject, config->tunnel_id, profile, error))
    return FALSE;
  fd = open(profile->identity_file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "Profile '%s': cannot open %s: %s",
                profile->name, profile->identity_file, g_strerror(errno));
    return FALSE;
  }
  config->identity_fd = fd;
  if (!tg_profile_check_identity_fd(fd, profile->identity_file, 0, error))
    return FALSE;

  for (guint i = 0; i < profile->forwards->len; i++) {
    TgForward *forward = tg_forward_copy(g_ptr_array_index(profile->forwards, i));
    g_ptr_array_add(request->forwards, forward);
    if (!tg_daemon_forward_is_served(forward, error))
      return FALSE;
  }
  config->host = g_strdup(profile->server_host);
  config->port = profile->server_port;
  config->user = g_strdup(profile->user);
  config->host_key = g_strdup(profile->host_key);
  if (request->description == NULL)
    request->description =
        g_strdup_printf("profile %s%s%s", profile->name, profile->description ? ": " : "",
                        profile->description ? profile->description : "");
  return TRUE;
}

static void open_act_finish(TgCall *call, TgResolved *resolved);

static void
open_act_resolved(TgResolved *resolved, gpointer user_data)
{
  TgCall *call = user_data;
  OpenRequest *request = call->data;
  TgDaemon *daemon = request->daemon;
  g_autoptr(GError) error = NULL;

  tg_daemon_end_resolving(daemon, call->caller->uid);
  if (tg_daemon_check_running(daemon, &error))
    open_act_finish(call, resolved);
  else
    tg_call_return_error(call, error);
  tg_call_free(call);
}

static void
open_act(TgCall *call)
{
  OpenRequest *request = call->data;
  TgDaemon *daemon = request->daemon;
  g_autoptr(GError) error = NULL;
  TgSessionConfig *config;

  /* polkit may answer after SIGTERM: nothing new starts then */
  if (!tg_daemon_check_running(daemon, &error)) {
    tg_call_return_error(call, error);
    return;
  }
  config = request->config = tg_session_config_new();

  /* the id first, so that the decisions below are logged with it (a refused
   * request uses its number up) */
  config->tunnel_id = g_strdup_printf("%" G_GUINT64_FORMAT, ++daemon->next_tunnel_id);

  if (request->destination->profile != NULL) {
    if (!apply_profile(request, config, &error)) {
      tg_call_return_error(call, error);
      return;
    }
  } else {
    config->host = g_strdup(request->destination->host);
    config->port = request->destination->port;
    config->user =
        g_strdup(request->destination->user != NULL ? request->destination->user
                                                    : call->caller->user_name);
    config->host_key = g_steal_pointer(&request->host_key);
  }

  for (guint i = 0; i < request->forwards->len; i++) {
    const TgForward *forward = g_ptr_array_index(request->forwards, i);

    if (forward->kind == TG_FORWARD_REMOTE) {
      /* R destinations are resolved in a thread; the call goes on then */
      if (!tg_daemon_begin_resolving(daemon, call->caller->uid, &error)) {
        tg_call_return_error(call, error);
        return;
      }
      tg_gate_resolve_connect_backs(daemon, request->subject, request->forwards,
                                    open_act_resolved, tg_call_keep(call));
      return;
    }
  }
  open_act_finish(call, NULL);
}

/* The rest of OpenTunnel, with the R destinations resolved (@resolved, NULL
 * when there is no R forward). */
static void
open_act_finish(TgCall *call, TgResolved *resolved)
{
  OpenRequest *request = call->data;
  TgDaemon *daemon = request->daemon;
  g_autoptr(TgSessionConfig) config = g_steal_pointer(&request->config);
  g_autoptr(GError) error = NULL;
  g_autofree char *destination = NULL;

  destination = destination_text(config->user, config->host, config->port);

  /* polkit said who may ask; now the organisation policy says what */
  if (!tg_gate_check_open(daemon, request->subject, config->tunnel_id, config->host,
                          config->port, request->forwards, config->host_key,
                          &config->host_key_mode, &error)) {
    tg_call_return_error(call, error);
    return;
  }

  for (guint i = 0; i < request->forwards->len; i++) {
    const TgForward *forward = g_ptr_array_index(request->forwards, i);
    gboolean all = tg_policy_forward_listens_on_all_addresses(daemon->policy,
                                                              request->subject, forward);
    /* a reload between polkit and now may have widened what is needed */
    if (request->destination->profile == NULL &&
        (tg_daemon_forward_actions(daemon, request->subject, forward) & ~call->granted)) {
      g_autoptr(GError) changed = g_error_new(
          TG_ERROR, TG_ERROR_NOT_AUTHORIZED,
          "Forward '%s' needs more than was authorized (the policy changed during the "
          "call); try again",
          forward->spec);
      tg_call_return_error(call, changed);
      return;
    }
    if (forward->kind == TG_FORWARD_REMOTE) {
      TgConnectBack *connect_back = tg_resolved_take(resolved, i, i, &error);
      if (connect_back == NULL) {
        tg_call_return_error(call, error);
        return;
      }
      g_ptr_array_add(config->connect_backs, connect_back);
    } else if (forward->listen.path != NULL) {
      /* a Unix socket: created by the worker, as the caller */
    } else if (!tg_listener_bind(forward, i, all, call->caller->uid, config->listeners,
                                 &error)) {
      tg_call_return_error(call, error); /* bound listeners close with config */
      return;
    }
  }

  if (!tg_gate_guard_listeners(daemon, request->subject, config->listeners,
                               config->tunnel_id, &error)) {
    g_prefix_error(&error, "Cannot guard the listeners in the firewall: ");
    tg_call_return_error(call, error);
    return;
  }
  for (guint i = 0; i < config->connect_backs->len; i++) {
    if (!tg_gate_pin_connect_back(daemon, g_ptr_array_index(config->connect_backs, i),
                                  config->tunnel_id, &error)) {
      for (guint j = 0; j < i; j++)
        tg_gate_unpin_connect_back(daemon, g_ptr_array_index(config->connect_backs, j));
      for (guint j = 0; j < config->listeners->len; j++) {
        const TgListener *listener = g_ptr_array_index(config->listeners, j);
        tg_gate_unguard_listener(daemon, listener->address, listener->port);
      }
      tg_call_return_error(call, error);
      return;
    }
  }
  config->socket_mark = tg_enforcer_socket_mark(daemon->enforcer);
  config->connect_back_mark = tg_enforcer_connect_back_mark(daemon->enforcer);
  config->owner.uid = call->caller->uid;
  config->owner.gid = call->caller->gid;
  config->owner.user_name = g_strdup(call->caller->user_name);
  config->agent_path = g_steal_pointer(&request->agent_path);
  config->agent_fd = g_steal_fd(&request->agent_fd);
  config->identity_path = g_steal_pointer(&request->identity_path);
  if (config->identity_fd < 0)
    config->identity_fd = g_steal_fd(&request->identity_fd);
  config->ciphers = g_steal_pointer(&request->ciphers);
  config->keepalive_seconds = request->keepalive;
  config->connect_timeout_seconds = daemon->connect_timeout_seconds;
  config->ssh_dir = g_strdup(daemon->state_dir);
  config->known_hosts = g_build_filename(daemon->state_dir, "known_hosts", NULL);
  config->global_known_hosts = g_strdup(daemon->system_known_hosts);
  g_ptr_array_extend_and_steal(config->forwards, g_steal_pointer(&request->forwards));
  request->forwards = g_ptr_array_new();

  TgTunnel *tunnel =
      tg_tunnel_open(daemon, call->caller, g_steal_pointer(&request->subject),
                     destination, request->description, request->bind_to_caller,
                     g_steal_pointer(&config), g_steal_pointer(&call->invocation));
  if (request->destination->profile != NULL)
    tg_tunnel_set_profile(tunnel, request->destination->profile);
}

/* ---- CloseTunnel, ListTunnels, GetManagedObjects ---- */

static gboolean
list_decide(TgCall *call)
{
  call->optional = TG_ACTION_MANAGE; /* to see other users' tunnels */
  return TRUE;
}

/* Who may see a tunnel of @owner (in lists and in signals): its owner, and
 * whoever has org.tunnelgate.manage. */
static gboolean
sees_tunnels_of(uid_t uid, gboolean manage, uid_t owner)
{
  return uid == owner || manage;
}

static gboolean
caller_sees(TgCall *call, TgTunnel *tunnel)
{
  return sees_tunnels_of(call->caller->uid, (call->granted & TG_ACTION_MANAGE) != 0,
                         tg_tunnel_get_owner(tunnel));
}

/* Tunnels in creation order, so that lists are stable. */
static GList *
sorted_tunnels(TgDaemon *daemon)
{
  GList *tunnels = g_hash_table_get_values(daemon->tunnels);

  return g_list_sort(tunnels, (GCompareFunc)tg_tunnel_compare);
}

static void
list_act(TgCall *call)
{
  TgDaemon *daemon = call->data;
  g_autoptr(GList) tunnels = sorted_tunnels(daemon);
  GVariantBuilder builder;

  g_variant_builder_init(&builder, G_VARIANT_TYPE("a(osussas)"));
  for (GList *l = tunnels; l != NULL; l = l->next) {
    if (caller_sees(call, l->data))
      g_variant_builder_add_value(&builder, tg_tunnel_summary(l->data));
  }
  tg_call_return_value(call,
                       g_variant_new("(@a(osussas))", g_variant_builder_end(&builder)));
}

static void
managed_objects_act(TgCall *call)
{
  TgDaemon *daemon = call->data;
  g_autoptr(GList) tunnels = sorted_tunnels(daemon);
  GVariantBuilder builder;

  g_variant_builder_init(&builder, G_VARIANT_TYPE("a{oa{sa{sv}}}"));
  for (GList *l = tunnels; l != NULL; l = l->next) {
    if (caller_sees(call, l->data))
      g_variant_builder_add(&builder, "{o@a{sa{sv}}}", tg_tunnel_get_path(l->data),
                            tg_tunnel_interfaces(l->data));
  }
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
reload_act(TgCall *call)
{
  TgDaemon *daemon = call->data;
  g_autoptr(GError) error = NULL;

  tg_log_event(G_LOG_LEVEL_MESSAGE, "POLICY_RELOAD", "USER", call->caller->user_name,
               "MESSAGE", "ReloadPolicy() by %s (uid %u)", call->caller->user_name,
               (unsigned)call->caller->uid);
  if (!tg_gate_reload(daemon, &error)) {
    tg_call_return_error(call, error);
    return;
  }
  tg_call_return_value(call, NULL);
}

static void
firewall_act(TgCall *call)
{
  TgDaemon *daemon = call->data;
  g_autofree char *text = tg_enforcer_describe(daemon->enforcer);

  tg_call_return_value(call, g_variant_new("(s)", text));
}

static void
audit_act(TgCall *call)
{
  TgDaemon *daemon = call->data;
  g_autoptr(GPtrArray) findings = tg_server_audit(daemon->server);
  GVariantBuilder builder;

  g_variant_builder_init(&builder, G_VARIANT_TYPE("a(sss)"));
  for (guint i = 0; i < findings->len; i++) {
    const TgServerFinding *finding = g_ptr_array_index(findings, i);
    g_variant_builder_add(&builder, "(sss)", finding->user, finding->setting,
                          finding->value);
  }
  tg_call_return_value(call, g_variant_new("(a(sss))", &builder));
}

/* ---- per-user usage ---- */

TgUsage *
tg_daemon_usage(TgDaemon *daemon, uid_t uid)
{
  TgUsage *usage = g_hash_table_lookup(daemon->usage, GUINT_TO_POINTER(uid));

  if (usage == NULL) {
    usage = g_new0(TgUsage, 1);
    atomic_store(&usage->refs, 1); /* the table's */
    g_hash_table_insert(daemon->usage, GUINT_TO_POINTER(uid), usage);
  }
  return tg_usage_ref(usage);
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
    OpenRequest *request = open_request_parse(daemon, invocation, parameters, &error);
    if (request == NULL) {
      g_dbus_method_invocation_return_gerror(invocation, error);
      return;
    }
    call = tg_call_new(invocation, action);
    call->data = request;
    call->free_data = open_request_free;
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
  GHashTableIter iter;
  gpointer tunnel;

  g_hash_table_iter_init(&iter, daemon->tunnels);
  while (g_hash_table_iter_next(&iter, NULL, &tunnel))
    tg_tunnel_publish_counters(tunnel);
  return G_SOURCE_CONTINUE;
}

/* ---- calls that wait for the resolver ---- */

gboolean
tg_daemon_begin_resolving(TgDaemon *daemon, uid_t uid, GError **error)
{
  guint n =
      GPOINTER_TO_UINT(g_hash_table_lookup(daemon->resolving, GUINT_TO_POINTER(uid)));

  if (n >= TG_MAX_RESOLVING_PER_USER) {
    g_set_error(error, TG_ERROR, TG_ERROR_LIMIT_EXCEEDED,
                "%d calls of yours already wait for names to be resolved; try again "
                "when they are done",
                TG_MAX_RESOLVING_PER_USER);
    return FALSE;
  }
  g_hash_table_insert(daemon->resolving, GUINT_TO_POINTER(uid), GUINT_TO_POINTER(n + 1));
  return TRUE;
}

void
tg_daemon_end_resolving(TgDaemon *daemon, uid_t uid)
{
  guint n =
      GPOINTER_TO_UINT(g_hash_table_lookup(daemon->resolving, GUINT_TO_POINTER(uid)));

  g_return_if_fail(n > 0);
  if (n == 1)
    g_hash_table_remove(daemon->resolving, GUINT_TO_POINTER(uid));
  else
    g_hash_table_insert(daemon->resolving, GUINT_TO_POINTER(uid),
                        GUINT_TO_POINTER(n - 1));
}

gboolean
tg_daemon_check_running(TgDaemon *daemon, GError **error)
{
  if (!daemon->stopping)
    return TRUE;
  g_set_error_literal(error, TG_ERROR, TG_ERROR_FAILED, "tunnelgated is stopping");
  return FALSE;
}

/* ---- who hears signals ---- */

/* A connection the daemon tells about tunnels (daemon.h). */
typedef struct {
  uid_t uid;
  gboolean manage;
  guint name_watch; /* removes the watcher when its connection leaves */
} TgWatcher;

static void
watcher_free(TgWatcher *watcher)
{
  g_bus_unwatch_name(watcher->name_watch);
  g_free(watcher);
}

static void
watcher_vanished(GDBusConnection *connection, const char *name, gpointer user_data)
{
  TgDaemon *daemon = user_data;

  g_hash_table_remove(daemon->watchers, name);
}

static void
watcher_authorized(const TgCaller *caller, gboolean manage_checked,
                   gboolean manage_granted, gpointer user_data)
{
  TgDaemon *daemon = user_data;
  TgWatcher *watcher = g_hash_table_lookup(daemon->watchers, caller->bus_name);

  if (watcher == NULL) {
    watcher = g_new0(TgWatcher, 1);
    watcher->uid = caller->uid;
    g_hash_table_insert(daemon->watchers, g_strdup(caller->bus_name), watcher);
    /* a name already gone is reported at once, and the watcher goes */
    watcher->name_watch = g_bus_watch_name_on_connection(
        daemon->bus, caller->bus_name, G_BUS_NAME_WATCHER_FLAGS_NONE, NULL,
        watcher_vanished, daemon, NULL);
  }
  if (manage_checked)
    watcher->manage = manage_granted;
}

static void
watcher_rechecked(const char *bus_name, gboolean allowed, gpointer user_data)
{
  TgDaemon *daemon = user_data;
  TgWatcher *watcher = g_hash_table_lookup(daemon->watchers, bus_name);

  if (watcher != NULL)
    watcher->manage = allowed;
}

static gboolean
recheck_watchers(gpointer user_data)
{
  TgDaemon *daemon = user_data;
  GHashTableIter iter;
  gpointer name, value;

  g_hash_table_iter_init(&iter, daemon->watchers);
  while (g_hash_table_iter_next(&iter, &name, &value)) {
    if (((TgWatcher *)value)->manage)
      tg_authz_check_quietly(daemon->authz, name, TG_ACTION_MANAGE, watcher_rechecked,
                             daemon);
  }
  return G_SOURCE_CONTINUE;
}

void
tg_daemon_emit_to_watchers(TgDaemon *daemon, uid_t owner, const char *path,
                           const char *interface, const char *signal_name,
                           GVariant *parameters)
{
  GHashTableIter iter;
  gpointer name, value;

  g_variant_ref_sink(parameters);
  g_hash_table_iter_init(&iter, daemon->watchers);
  while (g_hash_table_iter_next(&iter, &name, &value)) {
    const TgWatcher *watcher = value;

    if (sees_tunnels_of(watcher->uid, watcher->manage, owner))
      g_dbus_connection_emit_signal(daemon->bus, name, path, interface, signal_name,
                                    parameters, NULL);
  }
  g_variant_unref(parameters);
}

GHashTable *
tg_manager_new_watchers(void)
{
  return g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                               (GDestroyNotify)watcher_free);
}

gboolean
tg_manager_export(TgDaemon *daemon, GError **error)
{
  tg_authz_set_authorized_func(daemon->authz, watcher_authorized, daemon);
  daemon->manager_registration = g_dbus_connection_register_object(
      daemon->bus, TG_MANAGER_PATH, tg_daemon_interface(daemon, TG_MANAGER_INTERFACE),
      &manager_vtable, daemon, NULL, error);
  if (daemon->manager_registration == 0)
    return FALSE;
  daemon->object_manager_registration = g_dbus_connection_register_object(
      daemon->bus, TG_MANAGER_PATH,
      tg_daemon_interface(daemon, "org.freedesktop.DBus.ObjectManager"),
      &object_manager_vtable, daemon, NULL, error);
  if (daemon->object_manager_registration == 0)
    return FALSE;
  /* counters change on the hot path; they are announced once a second */
  daemon->counters_timer = g_timeout_add_seconds(1, publish_counters, daemon);
  daemon->watchers_timer =
      g_timeout_add_seconds(TG_WATCHER_RECHECK_SECONDS, recheck_watchers, daemon);
  return TRUE;
}

void
tg_manager_unexport(TgDaemon *daemon)
{
  g_clear_handle_id(&daemon->counters_timer, g_source_remove);
  g_clear_handle_id(&daemon->watchers_timer, g_source_remove);
  if (daemon->object_manager_registration != 0)
    g_dbus_connection_unregister_object(daemon->bus, daemon->object_manager_registration);
  if (daemon->manager_registration != 0)
    g_dbus_connection_unregister_object(daemon->bus, daemon->manager_registration);
  daemon->object_manager_registration = daemon->manager_registration = 0;
}
