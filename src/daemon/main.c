/* SPDX-License-Identifier: GPL-2.0-or-later */
/* tunnelgated: the system-wide SSH forwarding policy daemon.
 *
 * Parse options, build the objects, export them, and only then claim the bus
 * name, so that no caller ever reaches a half-built daemon. */
#include <errno.h>
#include <glib-unix.h>
#include <libssh/libssh.h>
#include <locale.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "text.h"
#include "worker.h"
#include "manager.h"
#include "gate.h"
#include "registry.h"
#include "privileges.h"
#include "profile.h"
#include "restore.h"
#include "tunnel.h"

typedef struct {
  char *bus_address;
  char *config_dir;
  char *state_dir;
  char *system_known_hosts;
  char *default_policy;
  int connect_timeout;
  gboolean no_firewall_owner;
  gboolean check_config;
  gboolean verbose;
  gboolean version;
} Options;

/* Every log line passes here: text that came from a peer (a server's error
 * or disconnect message, a SOCKS host name, a forwarded connection's
 * originator) must not forge lines or terminal escapes, so string fields
 * are shown as tg_text_printable() shows text (control characters as
 * \uNNNN, invalid UTF-8 as \xNN). Then GLib's default writer
 * (journal fields under systemd, stderr elsewhere). */
static GLogWriterOutput
log_writer(GLogLevelFlags level, const GLogField *fields, gsize n_fields,
           gpointer user_data)
{
  GLogField *clean = g_newa(GLogField, n_fields);
  GPtrArray *copies = g_ptr_array_new_with_free_func(g_free);
  GLogWriterOutput result;

  for (gsize i = 0; i < n_fields; i++) {
    clean[i] = fields[i];
    if (fields[i].length == -1 && fields[i].value != NULL &&
        !tg_text_is_printable(fields[i].value)) {
      char *copy = tg_text_printable(fields[i].value, G_MAXSIZE);

      g_ptr_array_add(copies, copy);
      clean[i].value = copy;
    }
  }
  result = g_log_writer_default(level, clean, n_fields, user_data);
  g_ptr_array_unref(copies);
  return result;
}

static GMainLoop *main_loop;

/* --check-config: everything the daemon would read, read and reported,
 * nothing started. */
static int
check_config(TgDaemon *daemon)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicy) policy = tg_gate_load(daemon, &error);
  g_autofree char *profiles_dir =
      g_build_filename(daemon->config_dir, "profiles.d", NULL);
  g_auto(GStrv) names = NULL;
  int status = EXIT_SUCCESS;

  if (policy == NULL) {
    g_printerr("tunnelgated: %s\n", error->message);
    return EXIT_FAILURE;
  }
  for (const char *const *file = tg_policy_get_files(policy); *file != NULL; file++)
    g_print("policy file %s: valid\n", *file);
  for (const char *const *warning = tg_policy_get_warnings(policy); *warning != NULL;
       warning++)
    g_printerr("tunnelgated: warning: %s\n", *warning);
  names = tg_profile_list(profiles_dir, &error);
  if (names == NULL) {
    g_printerr("tunnelgated: %s\n", error->message);
    return EXIT_FAILURE;
  }
  for (guint i = 0; names[i] != NULL; i++) {
    g_autoptr(GError) profile_error = NULL;
    g_autoptr(TgProfile) profile =
        tg_profile_load(profiles_dir, names[i], &profile_error);

    if (profile == NULL) {
      g_printerr("tunnelgated: profile %s: %s\n", names[i], profile_error->message);
      status = EXIT_FAILURE;
    } else {
      g_print("profile %s: valid\n", names[i]);
    }
  }
  return status;
}
static gboolean options_no_firewall_owner;
static int exit_status = EXIT_SUCCESS;

static gboolean
on_terminate(gpointer user_data)
{
  tg_message("received %s, shutting down", (const char *)user_data);
  g_main_loop_quit(main_loop);
  return G_SOURCE_CONTINUE;
}

static gboolean
on_reload(gpointer user_data)
{
  TgDaemon *daemon = user_data;
  g_autoptr(GError) error = NULL;

  tg_message("received SIGHUP, reloading the policy");
  if (!tg_manager_reload(daemon, &error))
    tg_log_event(G_LOG_LEVEL_WARNING, "POLICY_RELOAD_FAILED", "MESSAGE",
                 "policy not reloaded, the old one stays in force: %s", error->message);
  return G_SOURCE_CONTINUE;
}

/* The name is the daemon's: no other instance runs, so the tunnels of the
 * store are this one's to open (never before: a second instance started by
 * mistake must not bind their ports, or drop their records). */
static void
on_name_acquired(GDBusConnection *connection, const char *name, gpointer user_data)
{
  static gboolean restored;

  tg_message("tunnelgated %s ready on the bus as %s", PACKAGE_VERSION, name);
  if (!restored) {
    restored = TRUE;
    tg_restore_tunnels(user_data);
    tg_restore_autostart(user_data);
  }
}

static void
on_name_lost(GDBusConnection *connection, const char *name, gpointer user_data)
{
  g_printerr("tunnelgated: could not own the bus name %s (another instance running, "
             "or the bus policy does not allow it)\n",
             name);
  exit_status = EXIT_FAILURE;
  g_main_loop_quit(main_loop);
}

static GDBusConnection *
connect_bus(const char *address, GError **error)
{
  if (address == NULL)
    return g_bus_get_sync(G_BUS_TYPE_SYSTEM, NULL, error);
  /* polkit's client library talks to "the system bus": make it the same one */
  g_setenv("DBUS_SYSTEM_BUS_ADDRESS", address, TRUE);
  return g_dbus_connection_new_for_address_sync(
      address,
      G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
          G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
      NULL, NULL, error);
}

/* The policy's firewall, before the daemon takes its name: a policy that
 * asks for enforcement the kernel cannot give is an error, not a skip. */
static gboolean
apply_firewall(TgDaemon *daemon, GError **error)
{
  daemon->enforcer = tg_enforcer_new(!options_no_firewall_owner);
  daemon->server = tg_server_new(daemon->enforcer);
  if (tg_enforcer_apply_policy(daemon->enforcer, daemon->policy, error)) {
    tg_server_apply_policy(daemon->server, daemon->policy);
    return tg_server_wait(daemon->server, error);
  }
  g_prefix_error(
      error, "the policy asks for the firewall (EgressLockdown, ListenerGuard, "
             "ConnectBackPinning or ServerMode), but its table cannot be installed: ");
  return FALSE;
}

static GDBusNodeInfo *
load_introspection(GError **error)
{
  static const char *const files[] = {
    "/org/tunnelgate/dbus/org.tunnelgate.Manager1.xml",
    "/org/tunnelgate/dbus/org.tunnelgate.Tunnel1.xml",
    "/org/tunnelgate/dbus/org.freedesktop.DBus.ObjectManager.xml",
  };
  g_autoptr(GString) xml = g_string_new("<node>");

  for (gsize i = 0; i < G_N_ELEMENTS(files); i++) {
    g_autoptr(GBytes) bytes = g_resources_lookup_data(files[i], 0, error);
    g_autoptr(GDBusNodeInfo) node = NULL;

    if (bytes == NULL)
      return NULL;
    node = g_dbus_node_info_new_for_xml(g_bytes_get_data(bytes, NULL), error);
    if (node == NULL)
      return NULL;
    for (guint j = 0; node->interfaces[j] != NULL; j++)
      g_dbus_interface_info_generate_xml(node->interfaces[j], 0, xml);
  }
  g_string_append(xml, "</node>");
  return g_dbus_node_info_new_for_xml(xml->str, error);
}

static gboolean
prepare_state_dir(const char *path, GError **error)
{
  if (g_mkdir_with_parents(path, 0700) != 0) {
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                "Cannot create the state directory %s: %s", path, g_strerror(errno));
    return FALSE;
  }
  return TRUE;
}

/* Every forwarded connection holds a descriptor: raise the soft limit. It
 * stays below 65536 because libssh 0.10 silently truncates larger SSH
 * socket numbers (SSH_OPTIONS_FD is masked with 0xffff). */
static void
raise_descriptor_limit(void)
{
  struct rlimit limit;

  if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
    return;
  limit.rlim_cur = MIN(limit.rlim_max, (rlim_t)65535);
  setrlimit(RLIMIT_NOFILE, &limit);
}

static gboolean
parse_options(int *argc, char ***argv, Options *options, GError **error)
{
  GOptionEntry entries[] = {
    { "bus-address", 0, 0, G_OPTION_ARG_STRING, &options->bus_address,
      "Serve on the bus at ADDRESS instead of the system bus (tests)", "ADDRESS" },
    { "config-dir", 0, 0, G_OPTION_ARG_FILENAME, &options->config_dir,
      "Configuration directory (default " TG_SYSCONFDIR ")", "DIR" },
    { "state-dir", 0, 0, G_OPTION_ARG_FILENAME, &options->state_dir,
      "State directory holding known_hosts (default " TG_STATEDIR ")", "DIR" },
    { "default-policy", 0, 0, G_OPTION_ARG_FILENAME, &options->default_policy,
      "The shipped default policy (default " TG_DATADIR "/policy.conf)", "FILE" },
    { "system-known-hosts", 0, 0, G_OPTION_ARG_FILENAME, &options->system_known_hosts,
      "System known hosts file (default /etc/ssh/ssh_known_hosts)", "FILE" },
    { "connect-timeout", 0, 0, G_OPTION_ARG_INT, &options->connect_timeout,
      "Seconds to wait for an SSH server (default 15)", "SECONDS" },
    { "check-config", 0, 0, G_OPTION_ARG_NONE, &options->check_config,
      "Validate the policy files and every profile, print what was read, and exit "
      "(0: valid, 1: not)",
      NULL },
    { "no-firewall-owner", 0, 0, G_OPTION_ARG_NONE, &options->no_firewall_owner,
      "Do not make the firewall table owned by the daemon on kernels that could "
      "(others may change it; tamper repair puts it back)",
      NULL },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &options->verbose, "Log debug messages",
      NULL },
    { "version", 0, 0, G_OPTION_ARG_NONE, &options->version, "Print the version", NULL },
    { NULL },
  };
  g_autoptr(GOptionContext) context =
      g_option_context_new("- SSH forwarding policy daemon");

  g_option_context_add_main_entries(context, entries, NULL);
  if (!g_option_context_parse(context, argc, argv, error))
    return FALSE;
  if (options->connect_timeout < 0 || options->connect_timeout > 300) {
    g_set_error(
        error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
        "--connect-timeout must be between 1 and 300 seconds (0: the default, 15)");
    return FALSE;
  }
  return TRUE;
}

int
main(int argc, char **argv)
{
  Options options = { 0 };
  g_autoptr(GError) error = NULL;
  g_autoptr(PolkitAuthority) authority = NULL;
  TgDaemon daemon = { 0 };
  TgManager *manager;
  guint name_id;

  g_log_set_writer_func(log_writer, NULL, NULL);
  setlocale(LC_ALL, "");
  umask(022);
  /* sends use MSG_NOSIGNAL, but a closed peer must never kill the daemon */
  signal(SIGPIPE, SIG_IGN);
  raise_descriptor_limit();

  if (!parse_options(&argc, &argv, &options, &error)) {
    g_printerr("tunnelgated: %s\n", error->message);
    return EXIT_FAILURE;
  }
  if (options.version) {
    g_print("tunnelgated %s\n", PACKAGE_VERSION);
    return EXIT_SUCCESS;
  }
  if (options.verbose)
    g_log_set_debug_enabled(TRUE);
  options_no_firewall_owner = options.no_firewall_owner;

  daemon.config_dir = options.config_dir ? options.config_dir : g_strdup(TG_SYSCONFDIR);
  daemon.state_dir = options.state_dir ? options.state_dir : g_strdup(TG_STATEDIR);
  daemon.system_known_hosts = options.system_known_hosts
                                  ? options.system_known_hosts
                                  : g_strdup("/etc/ssh/ssh_known_hosts");
  daemon.connect_timeout_seconds = options.connect_timeout ? options.connect_timeout : 15;
  daemon.default_policy = options.default_policy ? options.default_policy
                                                 : g_strdup(TG_DATADIR "/policy.conf");
  if (options.check_config)
    return check_config(&daemon);

  /* libssh's global state (crypto) before any worker thread exists */
  if (ssh_init() != SSH_OK || !prepare_state_dir(daemon.state_dir, &error) ||
      !tg_privileges_drop(&error) ||
      (daemon.policy = tg_gate_load(&daemon, &error)) == NULL ||
      !apply_firewall(&daemon, &error) ||
      (daemon.introspection = load_introspection(&error)) == NULL ||
      (daemon.bus = connect_bus(options.bus_address, &error)) == NULL ||
      (authority = polkit_authority_get_sync(NULL, &error)) == NULL) {
    g_printerr("tunnelgated: %s\n", error != NULL ? error->message : "ssh_init failed");
    return EXIT_FAILURE;
  }
  daemon.authz = tg_authz_new(daemon.bus, authority);
  tg_authz_set_limit_func(daemon.authz, tg_gate_check_pending_calls, &daemon);
  daemon.registry =
      tg_registry_new(daemon.bus, daemon.authz, (GDestroyNotify)tg_tunnel_free);
  daemon.autostarting = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  manager = tg_manager_export(&daemon, &error);
  if (manager == NULL) {
    g_printerr("tunnelgated: %s\n", error->message);
    return EXIT_FAILURE;
  }

  main_loop = g_main_loop_new(NULL, FALSE);
  g_unix_signal_add(SIGTERM, on_terminate, "SIGTERM");
  g_unix_signal_add(SIGINT, on_terminate, "SIGINT");
  g_unix_signal_add(SIGHUP, on_reload, &daemon);
  g_dbus_connection_set_exit_on_close(daemon.bus, FALSE);
  g_signal_connect_swapped(daemon.bus, "closed", G_CALLBACK(g_main_loop_quit), main_loop);
  name_id = g_bus_own_name_on_connection(daemon.bus, TG_BUS_NAME,
                                         G_BUS_NAME_OWNER_FLAGS_DO_NOT_QUEUE,
                                         on_name_acquired, on_name_lost, &daemon, NULL);
  g_main_loop_run(main_loop);

  g_bus_unown_name(name_id);
  tg_manager_unexport(manager); /* no new tunnels while the old ones close */
  tg_manager_close_all(&daemon);
  tg_server_free(daemon.server); /* waits for its job; answers Audit callers */
  g_dbus_connection_flush_sync(daemon.bus, NULL, NULL);
  tg_registry_free(daemon.registry);
  g_hash_table_unref(daemon.autostarting);
  tg_enforcer_free(daemon.enforcer); /* the table stays in force */
  tg_worker_join_all();
  tg_policy_unref(daemon.policy);
  g_free(daemon.default_policy);
  tg_authz_free(daemon.authz);
  g_dbus_node_info_unref(daemon.introspection);
  g_object_unref(daemon.bus);
  g_main_loop_unref(main_loop);
  g_free(daemon.config_dir);
  g_free(daemon.state_dir);
  g_free(daemon.system_known_hosts);
  g_free(options.bus_address);
  ssh_finalize();
  return exit_status;
}
