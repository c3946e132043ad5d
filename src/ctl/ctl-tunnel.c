/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The verbs that change tunnels or the policy: open, close, forward add and
 * remove, check, reload. Each is a D-Bus call to tunnelgated made as the
 * user who runs tunnelgatectl: polkit and the policy decide, never root.
 * Credentials are handed over as descriptors opened here, with the user's
 * own rights: the ssh-agent's socket ($SSH_AUTH_SOCK) is connected here and
 * passed as `agent-fd`, a key file given with --identity is opened here and
 * passed as `identity-fd`. A tunnel opened with --persist, which the daemon
 * opens again after a restart, gets their paths instead (`agent`,
 * `identity`): a descriptor does not outlive the daemon. */
#include <errno.h>
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <glib-unix.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl.h"

/* ---- forward specs: -L/-R/-D SPEC, or "L SPEC" as the D-Bus API takes them */

static GPtrArray *option_forwards; /* "L spec", in the order given */

static gboolean
add_forward(char letter, const char *value, GError **error)
{
  if (value == NULL || *value == '\0') {
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "-%c needs a forward spec", letter);
    return FALSE;
  }
  g_ptr_array_add(option_forwards, g_strdup_printf("%c %s", letter, value));
  return TRUE;
}

static gboolean
option_local(const char *name, const char *value, gpointer data, GError **error)
{
  return add_forward('L', value, error);
}

static gboolean
option_remote(const char *name, const char *value, gpointer data, GError **error)
{
  return add_forward('R', value, error);
}

static gboolean
option_dynamic(const char *name, const char *value, gpointer data, GError **error)
{
  return add_forward('D', value, error);
}

#define FORWARD_OPTIONS                                                                  \
  { "local",                                                                             \
    'L',                                                                                 \
    0,                                                                                   \
    G_OPTION_ARG_CALLBACK,                                                               \
    (gpointer)option_local,                                                              \
    "A local forward, as ssh -L takes it: [bind_address:]port:host:hostport, or Unix "   \
    "sockets",                                                                           \
    "SPEC" },                                                                            \
      { "remote",                                                                        \
        'R',                                                                             \
        0,                                                                               \
        G_OPTION_ARG_CALLBACK,                                                           \
        (gpointer)option_remote,                                                         \
        "A remote forward, as ssh -R takes it: [bind_address:]port:host:hostport",       \
        "SPEC" },                                                                        \
  {                                                                                      \
    "dynamic", 'D', 0, G_OPTION_ARG_CALLBACK, (gpointer)option_dynamic,                  \
        "A SOCKS proxy, as ssh -D takes it: [bind_address:]port", "SPEC"                 \
  }

static void
forwards_begin(void)
{
  g_clear_pointer(&option_forwards, g_ptr_array_unref);
  option_forwards = g_ptr_array_new_with_free_func(g_free);
}

/* Arguments that are forwards: "L SPEC" as one argument, or L and SPEC as
 * two; appended to the -L/-R/-D options. FALSE after printing why. */
static gboolean
forwards_from_arguments(const char *verb, int argc, char **argv)
{
  for (int i = 0; i < argc; i++) {
    const char *word = argv[i];

    if (strchr("LRD", word[0]) != NULL && word[0] != '\0' && word[1] == '\0' &&
        i + 1 < argc) {
      g_ptr_array_add(option_forwards, g_strdup_printf("%c %s", word[0], argv[++i]));
    } else if (strchr("LRD", word[0]) != NULL && word[0] != '\0' && word[1] == ' ') {
      g_ptr_array_add(option_forwards, g_strdup(word));
    } else {
      ctl_error("'%s' is not a forward: give -L, -R or -D SPEC (or 'L SPEC'); try "
                "'tunnelgatectl %s --help'",
                word, verb);
      return FALSE;
    }
  }
  return TRUE;
}

/* ---- open ------------------------------------------------------------------ */

typedef struct {
  char *identity;
  char *host_key;
  char *description;
  char *keepalive;
  char *keepalive_count;
  gboolean reconnect;
  gboolean persist;
  gboolean no_wait;
  gboolean json;
} OpenOptions;

static const char open_description[] =
    "Asks tunnelgated for a tunnel to DESTINATION, [user@]host[:port] (the user\n"
    "defaults to yours, the port to 22), with the forwards given as ssh takes them,\n"
    "or starts the administrator's profile @PROFILE (no forwards, no credentials).\n"
    "\n"
    "The credentials are yours and are handed over as open descriptors: your\n"
    "ssh-agent ($SSH_AUTH_SOCK, connected by tunnelgatectl), or with --identity a\n"
    "key file opened by tunnelgatectl (keys with a passphrase: use the agent).\n"
    "The daemon never opens them with its own rights. With --persist the tunnel\n"
    "is opened again when the daemon restarts: it is then given their paths\n"
    "instead ($SSH_AUTH_SOCK, the --identity file made absolute), which the daemon\n"
    "opens as you.\n"
    "\n"
    "Waits until the tunnel is up, then prints its ID and every listener's real\n"
    "address and port (including ports chosen for port 0). An interrupt while\n"
    "waiting closes the tunnel. With --no-wait, returns as soon as the daemon has\n"
    "accepted the request (polkit and the policy said yes, the listeners are\n"
    "bound) and made the tunnel, which is still connecting: later failures only\n"
    "show in 'tunnelgatectl watch' and the journal (a tunnel that never comes up\n"
    "leaves no object). If you open several tunnels at the same moment, --no-wait\n"
    "may name another of yours that is connecting.\n"
    "\n"
    "Examples:\n"
    "  tunnelgatectl open gw.example.com -L 8080:intranet:80\n"
    "  tunnelgatectl open alice@gw:2222 -L 0:db:5432 -D 1080 --keepalive 30\n"
    "  tunnelgatectl open gw -L 5432:db:5432 --reconnect\n"
    "  tunnelgatectl open gw -L 5432:db:5432 --persist\n"
    "  tunnelgatectl open @intranet-db";

typedef struct {
  uid_t uid;
  gboolean no_wait;
  gboolean replied;
  GVariant *reply;
  GError *error;
  char *seen_path; /* a tunnel of ours that appeared while we waited */
  guint interrupts;
} OpenWait;

static void
open_tunnel_added(GDBusConnection *bus, const char *sender, const char *path,
                  const char *interface, const char *member, GVariant *parameters,
                  gpointer user_data)
{
  OpenWait *wait = user_data;
  const char *tunnel;
  g_autoptr(GVariant) interfaces = NULL;
  g_autoptr(GVariant) properties = NULL;
  guint32 owner;

  if (wait->seen_path != NULL ||
      !g_variant_is_of_type(parameters, G_VARIANT_TYPE("(oa{sa{sv}})")))
    return;
  g_variant_get(parameters, "(&o@a{sa{sv}})", &tunnel, &interfaces);
  properties =
      g_variant_lookup_value(interfaces, TG_TUNNEL_INTERFACE, G_VARIANT_TYPE_VARDICT);
  if (properties != NULL && g_variant_lookup(properties, "Owner", "u", &owner) &&
      owner == wait->uid)
    wait->seen_path = g_strdup(tunnel);
}

static void
open_replied(GObject *source, GAsyncResult *result, gpointer user_data)
{
  OpenWait *wait = user_data;

  wait->reply = g_dbus_connection_call_with_unix_fd_list_finish(
      G_DBUS_CONNECTION(source), NULL, result, &wait->error);
  wait->replied = TRUE;
}

static gboolean
open_interrupted(gpointer user_data)
{
  OpenWait *wait = user_data;

  if (wait->interrupts++ == 0 && wait->seen_path == NULL && !wait->replied)
    fprintf(stderr, "tunnelgatectl: interrupted: the tunnel will be closed as soon as "
                    "the daemon has made it (interrupt again to leave it)\n");
  return G_SOURCE_CONTINUE;
}

static gboolean
open_waiting(const OpenWait *wait)
{
  if (wait->interrupts > 0)
    return wait->interrupts == 1 && wait->seen_path == NULL && !wait->replied;
  if (wait->no_wait && wait->seen_path != NULL)
    return FALSE;
  return !wait->replied;
}

/* The agent's socket, connected with our rights; -1 after printing why. */
static int
connect_agent(const char *path)
{
  struct sockaddr_un address = { .sun_family = AF_UNIX };
  int fd;

  if (path[0] == '\0' || strlen(path) >= sizeof address.sun_path) {
    ctl_error("SSH_AUTH_SOCK is not a socket path: '%s'", path);
    return -1;
  }
  memcpy(address.sun_path, path, strlen(path) + 1);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) < 0) {
    ctl_error("cannot connect to the ssh-agent at %s ($SSH_AUTH_SOCK): %s", path,
              g_strerror(errno));
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

/* Adds `key` (h) with fd to the options, handing fd over; FALSE after
 * printing why. */
/* --NAME TEXT as the u option NAME (the daemon checks the range). */
static gboolean
add_number_option(GVariantBuilder *builder, const char *name, const char *text,
                  const char *what)
{
  guint64 number;

  if (text == NULL)
    return TRUE;
  if (!g_ascii_string_to_unsigned(text, 10, 0, G_MAXUINT32, &number, NULL)) {
    ctl_error("--%s: '%s' is not %s", name, text, what);
    return FALSE;
  }
  g_variant_builder_add(builder, "{sv}", name, g_variant_new_uint32((guint32)number));
  return TRUE;
}

static gboolean
add_fd_option(GVariantBuilder *options, GUnixFDList *fds, const char *key, int fd)
{
  g_autoptr(GError) error = NULL;
  int index = g_unix_fd_list_append(fds, fd, &error);

  close(fd);
  if (index < 0) {
    ctl_error("cannot pass a descriptor: %s", error->message);
    return FALSE;
  }
  g_variant_builder_add(options, "{sv}", key, g_variant_new_handle(index));
  return TRUE;
}

static gboolean
build_open_options(const char *destination, const OpenOptions *options,
                   GVariantBuilder *builder, GUnixFDList *fds)
{
  const char *agent = g_getenv("SSH_AUTH_SOCK");
  gboolean profile = destination[0] == '@';
  int fd;

  if (options->identity != NULL && options->persist) {
    g_autofree char *path = g_canonicalize_filename(options->identity, NULL);

    g_variant_builder_add(builder, "{sv}", "identity", g_variant_new_string(path));
  } else if (options->identity != NULL) {
    fd = open(options->identity, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
      ctl_error("cannot open %s: %s", options->identity, g_strerror(errno));
      return FALSE;
    }
    if (!add_fd_option(builder, fds, "identity-fd", fd))
      return FALSE;
  } else if (!profile) {
    if (agent == NULL) {
      ctl_error("no credentials: start an ssh-agent (SSH_AUTH_SOCK) or give --identity "
                "FILE");
      return FALSE;
    }
    if (options->persist && !g_path_is_absolute(agent)) {
      ctl_error("--persist: SSH_AUTH_SOCK is not an absolute path: '%s'", agent);
      return FALSE;
    }
    if (options->persist) {
      g_variant_builder_add(builder, "{sv}", "agent", g_variant_new_string(agent));
    } else {
      fd = connect_agent(agent);
      if (fd < 0 || !add_fd_option(builder, fds, "agent-fd", fd))
        return FALSE;
    }
  }
  if (options->host_key != NULL)
    g_variant_builder_add(builder, "{sv}", "host-key",
                          g_variant_new_string(options->host_key));
  if (options->description != NULL) {
    if (!g_utf8_validate(options->description, -1, NULL)) {
      ctl_error("--description is not valid UTF-8");
      return FALSE;
    }
    g_variant_builder_add(builder, "{sv}", "description",
                          g_variant_new_string(options->description));
  }
  if (!add_number_option(builder, "keepalive", options->keepalive,
                         "a number of seconds") ||
      !add_number_option(builder, "keepalive-count", options->keepalive_count,
                         "a number"))
    return FALSE;
  if (options->reconnect)
    g_variant_builder_add(builder, "{sv}", "reconnect", g_variant_new_boolean(TRUE));
  if (options->persist)
    g_variant_builder_add(builder, "{sv}", "persist", g_variant_new_boolean(TRUE));
  return TRUE;
}

static int
print_opened(const char *path, gboolean up, gboolean json)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GVariant) properties = NULL;
  g_autoptr(GVariant) listeners = NULL;

  if (up)
    reply = g_dbus_connection_call_sync(
        ctl_bus(), TG_BUS_NAME, path, TG_DBUS_PROPERTIES_INTERFACE, "GetAll",
        g_variant_new("(s)", TG_TUNNEL_INTERFACE), G_VARIANT_TYPE("(a{sv})"),
        G_DBUS_CALL_FLAGS_NONE, CTL_CALL_TIMEOUT_MS, NULL, &error);
  if (reply != NULL)
    properties = g_variant_get_child_value(reply, 0);
  if (json) {
    g_autoptr(GString) out = g_string_new(NULL);

    if (properties != NULL)
      ctl_append_tunnel_json(out, path, properties);
    else
      g_string_printf(out, "{\"id\":\"%s\",\"path\":\"%s\",\"state\":\"%s\"}",
                      ctl_tunnel_id(path), path, up ? "up" : "connecting");
    printf("%s\n", out->str);
  } else if (!up) {
    printf("Tunnel %s is connecting (%s); see 'tunnelgatectl show %s'\n",
           ctl_tunnel_id(path), path, ctl_tunnel_id(path));
  } else {
    const char *destination = "";

    if (properties != NULL)
      g_variant_lookup(properties, "Destination", "&s", &destination);
    printf("Tunnel %s is up%s%s\n", ctl_tunnel_id(path), *destination ? ": " : "",
           destination);
    if (properties != NULL)
      listeners =
          g_variant_lookup_value(properties, "Listeners", G_VARIANT_TYPE("a(ssq)"));
    ctl_print_listeners(listeners);
  }
  if (up && reply == NULL) {
    g_autofree char *what = g_strdup_printf(
        "tunnel %s is up, but its listeners cannot be read: GetAll", ctl_tunnel_id(path));
    ctl_report_error(what, error);
  }
  return CTL_EXIT_OK;
}

/* An interrupted open: close what the daemon made for us. */
static int
open_cancel(OpenWait *wait)
{
  const char *path = wait->seen_path;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) closed = NULL;

  if (wait->replied && wait->reply == NULL) { /* failed anyway: nothing to close */
    ctl_report_error("OpenTunnel", wait->error);
    return 128 + SIGINT;
  }
  if (wait->reply != NULL)
    g_variant_get(wait->reply, "(&o)", &path);
  if (path == NULL) {
    ctl_error("interrupted; the request is still with the daemon");
    return 128 + SIGINT;
  }
  closed = g_dbus_connection_call_sync(
      ctl_bus(), TG_BUS_NAME, TG_MANAGER_PATH, TG_MANAGER_INTERFACE, "CloseTunnel",
      g_variant_new("(o)", path), NULL, G_DBUS_CALL_FLAGS_NONE, CTL_CALL_TIMEOUT_MS, NULL,
      &error);
  if (closed == NULL) {
    g_autofree char *what = g_strdup_printf("interrupted; closing tunnel %s: CloseTunnel",
                                            ctl_tunnel_id(path));
    ctl_report_error(what, error);
  } else {
    ctl_error("interrupted; tunnel %s closed", ctl_tunnel_id(path));
  }
  return 128 + SIGINT;
}

static void
open_options_clear(OpenOptions *options)
{
  g_free(options->identity);
  g_free(options->host_key);
  g_free(options->description);
  g_free(options->keepalive);
  g_free(options->keepalive_count);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(OpenOptions, open_options_clear)

int
ctl_open(int argc, char **argv)
{
  g_auto(OpenOptions) options = { NULL };
  GOptionEntry entries[] = {
    FORWARD_OPTIONS,
    { "identity", 'i', 0, G_OPTION_ARG_FILENAME, &options.identity,
      "Log in with this private key (opened by tunnelgatectl, as you) instead of the "
      "agent",
      "FILE" },
    { "host-key", 0, 0, G_OPTION_ARG_STRING, &options.host_key,
      "The server's key, SHA256:... as ssh-keygen -l prints it (for a host the known "
      "hosts do not list)",
      "FINGERPRINT" },
    { "description", 0, 0, G_OPTION_ARG_STRING, &options.description,
      "Free text shown with the tunnel (at most 256 bytes)", "TEXT" },
    { "keepalive", 0, 0, G_OPTION_ARG_STRING, &options.keepalive,
      "Ask the server for a sign of life after N silent seconds (0: off; default 0, or "
      "30 with --reconnect)",
      "N" },
    { "keepalive-count", 0, 0, G_OPTION_ARG_STRING, &options.keepalive_count,
      "Silent keepalive intervals before the session counts as lost (default 3)", "N" },
    { "reconnect", 0, 0, G_OPTION_ARG_NONE, &options.reconnect,
      "When the session is lost, keep the listeners and reconnect (with backoff)", NULL },
    { "persist", 0, 0, G_OPTION_ARG_NONE, &options.persist,
      "Open the tunnel again when the daemon restarts (implies --reconnect; passes the "
      "paths of your agent or key instead of descriptors)",
      NULL },
    { "no-wait", 0, 0, G_OPTION_ARG_NONE, &options.no_wait,
      "Return once the tunnel is made and connecting, without waiting until it is up",
      NULL },
    { "json", 0, 0, G_OPTION_ARG_NONE, &options.json,
      "Print the tunnel as one JSON object, as 'show --json' does", NULL },
    { NULL },
  };
  g_autoptr(GVariantBuilder) builder = g_variant_builder_new(G_VARIANT_TYPE_VARDICT);
  g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
  OpenWait wait = { .uid = getuid() };
  GDBusConnection *bus;
  GVariant *parameters;
  const char *destination, *path;
  guint subscription, sigint, sigterm;
  int status;

  forwards_begin();
  if (!ctl_parse_options("open", "[user@]host[:port] -L|-R|-D SPEC… | @PROFILE",
                         open_description, entries, &argc, &argv))
    return CTL_EXIT_FAILURE;
  if (argc < 2) {
    ctl_error("open needs a destination; try 'tunnelgatectl open --help'");
    return CTL_EXIT_FAILURE;
  }
  destination = argv[1];
  if (!forwards_from_arguments("open", argc - 2, argv + 2))
    return CTL_EXIT_FAILURE;
  if (destination[0] != '@' && option_forwards->len == 0) {
    ctl_error("open needs at least one forward (-L, -R or -D); try 'tunnelgatectl open "
              "--help'");
    return CTL_EXIT_FAILURE;
  }
  if (!build_open_options(destination, &options, builder, fds))
    return CTL_EXIT_FAILURE;
  bus = ctl_bus();
  if (bus == NULL)
    return CTL_EXIT_BUS;

  g_ptr_array_add(option_forwards, NULL);
  parameters =
      g_variant_new("(s^asa{sv})", destination, (char **)option_forwards->pdata, builder);
  wait.no_wait = options.no_wait;
  /* sent before the call, so the bus routes the new tunnel's announcement to us */
  subscription = g_dbus_connection_signal_subscribe(
      bus, TG_BUS_NAME, TG_DBUS_OBJECT_MANAGER_INTERFACE, "InterfacesAdded",
      TG_MANAGER_PATH, NULL, G_DBUS_SIGNAL_FLAGS_NONE, open_tunnel_added, &wait, NULL);
  sigint = g_unix_signal_add(SIGINT, open_interrupted, &wait);
  sigterm = g_unix_signal_add(SIGTERM, open_interrupted, &wait);
  g_dbus_connection_call_with_unix_fd_list(
      bus, TG_BUS_NAME, TG_MANAGER_PATH, TG_MANAGER_INTERFACE, "OpenTunnel", parameters,
      G_VARIANT_TYPE("(o)"), G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION,
      CTL_CALL_TIMEOUT_MS, fds, NULL, open_replied, &wait);
  while (open_waiting(&wait))
    g_main_context_iteration(NULL, TRUE);
  g_source_remove(sigint);
  g_source_remove(sigterm);
  g_dbus_connection_signal_unsubscribe(bus, subscription);

  if (wait.interrupts > 0)
    status = open_cancel(&wait);
  else if (wait.replied && wait.reply == NULL)
    status = ctl_report_error("OpenTunnel", wait.error);
  else if (wait.replied) {
    g_variant_get(wait.reply, "(&o)", &path);
    status = print_opened(path, TRUE, options.json);
  } else
    status = print_opened(wait.seen_path, FALSE, options.json);
  g_clear_pointer(&wait.reply, g_variant_unref);
  g_clear_error(&wait.error);
  g_free(wait.seen_path);
  g_clear_pointer(&option_forwards, g_ptr_array_unref);
  return status;
}

/* ---- close ----------------------------------------------------------------- */

int
ctl_close(int argc, char **argv)
{
  GOptionEntry entries[] = { { NULL } };
  int status = CTL_EXIT_OK;

  if (!ctl_parse_options("close", "ID…",
                         "Closes each tunnel ID (its Id, or its object path) and returns "
                         "once its listeners are closed and their ports free. Your own "
                         "tunnels need polkit's org.tunnelgate.open, other users' "
                         "org.tunnelgate.manage. The exit status is that of the first "
                         "tunnel that could not be closed.",
                         entries, &argc, &argv))
    return CTL_EXIT_FAILURE;
  if (argc < 2) {
    ctl_error("close needs a tunnel ID; try 'tunnelgatectl close --help'");
    return CTL_EXIT_FAILURE;
  }
  for (int i = 1; i < argc; i++) {
    g_autofree char *path = ctl_tunnel_path(argv[i]);
    g_autoptr(GVariant) reply = NULL;
    int one = CTL_EXIT_FAILURE;

    if (path != NULL)
      reply = ctl_call(TG_MANAGER_PATH, TG_MANAGER_INTERFACE, "CloseTunnel",
                       g_variant_new("(o)", path), NULL, &one);
    if (reply != NULL)
      printf("Tunnel %s closed\n", ctl_tunnel_id(path));
    else if (status == CTL_EXIT_OK)
      status = one;
  }
  return status;
}

/* ---- credentials ----------------------------------------------------------- */

int
ctl_credentials(int argc, char **argv)
{
  g_autofree char *identity = NULL;
  GOptionEntry entries[] = {
    { "identity", 'i', 0, G_OPTION_ARG_FILENAME, &identity,
      "Give this private key (by its path, opened by the daemon as you) instead of the "
      "agent",
      "FILE" },
    { NULL },
  };
  const char *agent = g_getenv("SSH_AUTH_SOCK");
  g_autofree char *key_path = NULL;
  int status = CTL_EXIT_OK;

  if (!ctl_parse_options(
          "credentials", "[--identity FILE] ID…",
          "Gives each tunnel ID (opened with --reconnect) your ssh-agent "
          "($SSH_AUTH_SOCK) "
          "or, with --identity, a key file, by path, for its next attempt: after your "
          "agent was restarted at another path, or your key replaced. A tunnel that is "
          "up "
          "goes on with what it logged in with; a reconnecting one tries at once. Only "
          "the "
          "owner of a tunnel may do this.",
          entries, &argc, &argv))
    return CTL_EXIT_FAILURE;
  if (argc < 2) {
    ctl_error("credentials needs a tunnel ID; try 'tunnelgatectl credentials --help'");
    return CTL_EXIT_FAILURE;
  }
  if (identity != NULL)
    key_path = g_canonicalize_filename(identity, NULL);
  else if (agent == NULL || !g_path_is_absolute(agent)) {
    ctl_error("no ssh-agent: SSH_AUTH_SOCK is %s%s%s; start one or give --identity FILE",
              agent != NULL ? "'" : "not set", agent != NULL ? agent : "",
              agent != NULL ? "', not an absolute path" : "");
    return CTL_EXIT_FAILURE;
  }
  for (int i = 1; i < argc; i++) {
    g_autofree char *path = ctl_tunnel_path(argv[i]);
    g_autoptr(GVariantBuilder) credentials =
        g_variant_builder_new(G_VARIANT_TYPE_VARDICT);
    g_autoptr(GVariant) reply = NULL;
    int one = CTL_EXIT_FAILURE;

    g_variant_builder_add(credentials, "{sv}", key_path != NULL ? "identity" : "agent",
                          g_variant_new_string(key_path != NULL ? key_path : agent));
    if (path != NULL)
      reply = ctl_call(path, TG_TUNNEL_INTERFACE, "SetCredentials",
                       g_variant_new("(a{sv})", credentials), NULL, &one);
    if (reply != NULL)
      printf("Tunnel %s has new credentials (%s)\n", ctl_tunnel_id(path),
             key_path != NULL ? key_path : agent);
    else if (status == CTL_EXIT_OK)
      status = one;
  }
  return status;
}

/* ---- forward add | remove -------------------------------------------------- */

/* "forward\taddress\tport" of every listener of the tunnel (empty when they
 * cannot be read). */
static GHashTable *
listener_set(const char *path)
{
  GHashTable *set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      ctl_bus(), TG_BUS_NAME, path, TG_DBUS_PROPERTIES_INTERFACE, "Get",
      g_variant_new("(ss)", TG_TUNNEL_INTERFACE, "Listeners"), G_VARIANT_TYPE("(v)"),
      G_DBUS_CALL_FLAGS_NONE, CTL_CALL_TIMEOUT_MS, NULL, NULL);
  g_autoptr(GVariant) listeners = NULL;
  GVariantIter iter;
  const char *forward, *address;
  guint16 port;

  if (reply == NULL)
    return set;
  g_variant_get(reply, "(v)", &listeners);
  if (!g_variant_is_of_type(listeners, G_VARIANT_TYPE("a(ssq)")))
    return set;
  g_variant_iter_init(&iter, listeners);
  while (g_variant_iter_next(&iter, "(&s&sq)", &forward, &address, &port))
    g_hash_table_add(set,
                     g_strdup_printf("%s\t%s\t%u", forward, address, (unsigned)port));
  return set;
}

static void
print_new_listeners(GHashTable *before, GHashTable *after)
{
  GHashTableIter iter;
  gpointer key;
  g_autoptr(GVariantBuilder) fresh = g_variant_builder_new(G_VARIANT_TYPE("a(ssq)"));
  g_autoptr(GVariant) listeners = NULL;

  g_hash_table_iter_init(&iter, after);
  while (g_hash_table_iter_next(&iter, &key, NULL)) {
    g_auto(GStrv) fields = NULL;

    if (g_hash_table_contains(before, key))
      continue;
    fields = g_strsplit(key, "\t", 3);
    g_variant_builder_add(fresh, "(ssq)", fields[0], fields[1],
                          (guint16)g_ascii_strtoull(fields[2], NULL, 10));
  }
  listeners = g_variant_ref_sink(g_variant_builder_end(fresh));
  ctl_print_listeners(listeners);
}

int
ctl_forward(int argc, char **argv)
{
  GOptionEntry entries[] = { FORWARD_OPTIONS, { NULL } };
  g_autofree char *path = NULL;
  gboolean add;
  int status = CTL_EXIT_OK;

  forwards_begin();
  if (!ctl_parse_options(
          "forward", "add|remove ID SPEC…",
          "Adds forwards to the running tunnel ID (like ssh -O forward), or removes "
          "them\n"
          "(like ssh -O cancel). SPEC is -L, -R or -D and what ssh takes for it, or\n"
          "'L SPEC' as the D-Bus API takes it. Added forwards pass the same checks as\n"
          "'open' (polkit, then the tunnel owner's policy); their listeners are "
          "printed.\n"
          "A removed forward's port is free when the command returns; removing the last\n"
          "forward closes the tunnel. Forwards are compared in canonical form, as "
          "'show'\n"
          "prints them.\n"
          "\n"
          "Example:\n"
          "  tunnelgatectl forward add 12 -L 127.0.0.1:0:intranet:443",
          entries, &argc, &argv))
    return CTL_EXIT_FAILURE;
  if (argc < 3 || (!g_str_equal(argv[1], "add") && !g_str_equal(argv[1], "remove"))) {
    ctl_error("usage: tunnelgatectl forward add|remove ID SPEC…; try 'tunnelgatectl "
              "forward --help'");
    return CTL_EXIT_FAILURE;
  }
  add = g_str_equal(argv[1], "add");
  path = ctl_tunnel_path(argv[2]);
  if (path == NULL || !forwards_from_arguments("forward", argc - 3, argv + 3))
    return CTL_EXIT_FAILURE;
  if (option_forwards->len == 0) {
    ctl_error("forward %s needs a forward (-L, -R or -D SPEC)", argv[1]);
    return CTL_EXIT_FAILURE;
  }
  for (guint i = 0; i < option_forwards->len && status == CTL_EXIT_OK; i++) {
    const char *spec = g_ptr_array_index(option_forwards, i);
    g_autoptr(GHashTable) before = add ? listener_set(path) : NULL;
    g_autoptr(GVariant) reply =
        ctl_call(path, TG_TUNNEL_INTERFACE, add ? "AddForward" : "RemoveForward",
                 g_variant_new("(s)", spec), NULL, &status);

    if (reply == NULL)
      break;
    printf("Tunnel %s: %s %s\n", ctl_tunnel_id(path), add ? "added" : "removed", spec);
    if (add) {
      g_autoptr(GHashTable) after = listener_set(path);
      print_new_listeners(before, after);
    }
  }
  g_clear_pointer(&option_forwards, g_ptr_array_unref);
  return status;
}

/* ---- check ------------------------------------------------------------------ */

int
ctl_check(int argc, char **argv)
{
  GOptionEntry entries[] = { FORWARD_OPTIONS, { NULL } };
  int status = CTL_EXIT_OK;

  forwards_begin();
  if (!ctl_parse_options(
          "check", "[user@]host[:port] SPEC…",
          "Asks the daemon whether the policy would allow you each forward to that\n"
          "server (Manager1.CheckForward, a dry run: nothing is opened), and prints\n"
          "'allowed' or 'denied' with the reason, naming the policy file, line and\n"
          "keyword that decided. SPEC is -L, -R or -D and what ssh takes for it, or\n"
          "'L SPEC'. polkit is not asked about the forward itself (open would be).\n"
          "\n"
          "Exit status: 0 when every forward is allowed, 1 when one is denied (or on a\n"
          "usage error), 2 when the daemon could not answer.",
          entries, &argc, &argv))
    return CTL_EXIT_FAILURE;
  if (argc < 2) {
    ctl_error(
        "check needs a destination and a forward; try 'tunnelgatectl check --help'");
    return CTL_EXIT_FAILURE;
  }
  if (!forwards_from_arguments("check", argc - 2, argv + 2))
    return CTL_EXIT_FAILURE;
  if (option_forwards->len == 0) {
    ctl_error("check needs a forward (-L, -R or -D SPEC)");
    return CTL_EXIT_FAILURE;
  }
  for (guint i = 0; i < option_forwards->len; i++) {
    const char *spec = g_ptr_array_index(option_forwards, i);
    g_autoptr(GVariant) reply = NULL;
    gboolean allowed;
    const char *why;
    int one;

    reply = ctl_call(TG_MANAGER_PATH, TG_MANAGER_INTERFACE, "CheckForward",
                     g_variant_new("(ss)", argv[1], spec), G_VARIANT_TYPE("(bs)"), &one);
    if (reply == NULL) {
      status = one;
      break;
    }
    g_variant_get(reply, "(b&s)", &allowed, &why);
    if (option_forwards->len > 1)
      printf("%s: ", spec);
    printf("%s: %s\n", allowed ? "allowed" : "denied", why);
    if (!allowed)
      status = CTL_EXIT_FAILURE;
  }
  g_clear_pointer(&option_forwards, g_ptr_array_unref);
  return status;
}

/* ---- reload ------------------------------------------------------------------ */

int
ctl_reload(int argc, char **argv)
{
  GOptionEntry entries[] = { { NULL } };
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GVariant) files = NULL;
  g_autoptr(GVariant) value = NULL;
  int status;

  if (!ctl_parse_options(
          "reload", "",
          "Makes the daemon read every policy file again (like SIGHUP). A file with an\n"
          "error changes nothing: the error names its file and line (InvalidArgument,\n"
          "exit status 1). Otherwise the new policy applies at once: tunnels and\n"
          "forwards it forbids are closed. Prints the policy files in force. Needs\n"
          "polkit's org.tunnelgate.manage.",
          entries, &argc, &argv))
    return CTL_EXIT_FAILURE;
  if (argc > 1) {
    ctl_error("reload takes no arguments");
    return CTL_EXIT_FAILURE;
  }
  reply = ctl_call(TG_MANAGER_PATH, TG_MANAGER_INTERFACE, "ReloadPolicy", NULL, NULL,
                   &status);
  if (reply == NULL)
    return status;
  files = ctl_call(TG_MANAGER_PATH, TG_DBUS_PROPERTIES_INTERFACE, "Get",
                   g_variant_new("(ss)", TG_MANAGER_INTERFACE, "PolicyFiles"),
                   G_VARIANT_TYPE("(v)"), &status);
  if (files == NULL) {
    printf("Policy reloaded\n");
    return CTL_EXIT_OK;
  }
  g_variant_get(files, "(v)", &value);
  printf("Policy reloaded; in force:\n");
  if (g_variant_is_of_type(value, G_VARIANT_TYPE_STRING_ARRAY)) {
    g_autofree const char **names = g_variant_get_strv(value, NULL);

    for (gsize i = 0; names[i] != NULL; i++)
      printf("  %s\n", names[i]);
  }
  return CTL_EXIT_OK;
}
