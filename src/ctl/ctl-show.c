/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The verbs that show tunnels: list (a table, or JSON for scripts), show
 * (every property of one tunnel) and watch (live events from the daemon's
 * signals); and how tunnels, counters and times are written. */
#include <glib-unix.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "text.h"

/* ---- formats ------------------------------------------------------------ */

char *
ctl_format_bytes(guint64 bytes)
{
  static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  char number[G_ASCII_DTOSTR_BUF_SIZE];
  double value = (double)bytes;
  gsize unit = 0;

  if (bytes < 1024)
    return g_strdup_printf("%" G_GUINT64_FORMAT " B", bytes);
  value /= 1024;
  /* 1023.96 KiB would be written 1024.0 KiB: that is 1.0 MiB */
  while (value >= 1023.95 && unit + 1 < G_N_ELEMENTS(units)) {
    value /= 1024;
    unit++;
  }
  g_ascii_formatd(number, sizeof number, "%.1f", value);
  return g_strdup_printf("%s %s", number, units[unit]);
}

char *
ctl_format_time(guint64 usec)
{
  g_autoptr(GDateTime) time =
      g_date_time_new_from_unix_local((gint64)(usec / G_USEC_PER_SEC));

  if (time == NULL)
    return g_strdup_printf("%" G_GUINT64_FORMAT, usec);
  return g_date_time_format(time, "%Y-%m-%dT%H:%M:%S%:z");
}

char *
ctl_format_address(const char *address, guint16 port)
{
  if (address[0] == '/' && port == 0)
    return g_strdup(address);
  if (strchr(address, ':') != NULL)
    return g_strdup_printf("[%s]:%u", address, (unsigned)port);
  return g_strdup_printf("%s:%u", address, (unsigned)port);
}

/* The user name of a uid, or NULL. */
static char *
user_name(guint32 uid)
{
  struct passwd pw, *found = NULL;
  char buffer[4096];

  if (getpwuid_r(uid, &pw, buffer, sizeof buffer, &found) != 0 || found == NULL)
    return NULL;
  return g_strdup(pw.pw_name);
}

#define LABEL "%-19s"

/* A labelled line of the daemon's text, escaped for the terminal. */
static void
print_text(const char *label, const char *text)
{
  g_autofree char *printable = tg_text_printable(text, G_MAXSIZE);

  printf(LABEL "%s\n", label, printable);
}

static const char *
lookup_string(GVariant *properties, const char *key)
{
  const char *value = NULL;

  if (!g_variant_lookup(properties, key, "&s", &value))
    return "";
  return value;
}

static guint64
lookup_number(GVariant *properties, const char *key)
{
  g_autoptr(GVariant) value = g_variant_lookup_value(properties, key, NULL);

  if (value == NULL)
    return 0;
  if (g_variant_is_of_type(value, G_VARIANT_TYPE_UINT64))
    return g_variant_get_uint64(value);
  if (g_variant_is_of_type(value, G_VARIANT_TYPE_UINT32))
    return g_variant_get_uint32(value);
  return 0;
}

static gboolean
lookup_bool(GVariant *properties, const char *key)
{
  gboolean value = FALSE;

  return g_variant_lookup(properties, key, "b", &value) && value;
}

/* While reconnecting: "attempt N at TIME (in S s)", or that it waits for
 * the resume from sleep; NULL in other states. */
static char *
retry_text(GVariant *properties)
{
  guint64 attempt = lookup_number(properties, "RetryAttempt");
  guint64 next = lookup_number(properties, "NextRetry");
  gint64 in;
  g_autofree char *when = NULL;

  if (!g_str_equal(lookup_string(properties, "State"), "reconnecting"))
    return NULL;
  if (attempt == 0 || next == 0)
    return g_strdup("at the resume from sleep");
  when = ctl_format_time(next);
  in = ((gint64)next - g_get_real_time()) / G_USEC_PER_SEC;
  return g_strdup_printf("attempt %" G_GUINT64_FORMAT " at %s (in %" G_GINT64_FORMAT
                         " s)",
                         attempt, when, MAX(in, 0));
}

static gboolean
has_key(GVariant *properties, const char *key)
{
  g_autoptr(GVariant) value = g_variant_lookup_value(properties, key, NULL);

  return value != NULL;
}

static const char *
verb_of_forward(const char *forward)
{
  switch (forward[0]) {
  case 'D':
    return "SOCKS proxy on";
  case 'R':
    return "the server listens on";
  default:
    return "listening on";
  }
}

void
ctl_print_listeners(GVariant *listeners)
{
  GVariantIter iter;
  const char *forward, *address;
  guint16 port;

  if (listeners == NULL)
    return;
  g_variant_iter_init(&iter, listeners);
  while (g_variant_iter_next(&iter, "(&s&sq)", &forward, &address, &port)) {
    g_autofree char *where = ctl_format_address(address, port);

    printf("  %s: %s %s\n", forward, verb_of_forward(forward), where);
  }
}

/* ---- JSON ------------------------------------------------------------------ */

static void
json_string(GString *out, const char *text)
{
  g_string_append_c(out, '"');
  for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
    switch (*p) {
    case '"':
      g_string_append(out, "\\\"");
      break;
    case '\\':
      g_string_append(out, "\\\\");
      break;
    case '\n':
      g_string_append(out, "\\n");
      break;
    case '\t':
      g_string_append(out, "\\t");
      break;
    case '\r':
      g_string_append(out, "\\r");
      break;
    default:
      if (*p < 0x20 || *p == 0x7f)
        g_string_append_printf(out, "\\u%04x", *p);
      else
        g_string_append_c(out, (char)*p); /* D-Bus strings are valid UTF-8 */
    }
  }
  g_string_append_c(out, '"');
}

static void
json_key(GString *out, const char *key, gboolean first)
{
  if (!first)
    g_string_append_c(out, ',');
  json_string(out, key);
  g_string_append_c(out, ':');
}

void
ctl_append_tunnel_json(GString *out, const char *path, GVariant *properties)
{
  g_autoptr(GVariant) forwards =
      g_variant_lookup_value(properties, "Forwards", G_VARIANT_TYPE_STRING_ARRAY);
  g_autoptr(GVariant) listeners =
      g_variant_lookup_value(properties, "Listeners", G_VARIANT_TYPE("a(ssq)"));
  guint32 owner = (guint32)lookup_number(properties, "Owner");
  g_autofree char *name = user_name(owner);
  g_autofree char *created = ctl_format_time(lookup_number(properties, "Created"));
  static const struct {
    const char *json, *property;
  } strings[] = { { "destination", "Destination" },
                  { "description", "Description" },
                  { "state", "State" } },
    counters[] = { { "bytes_sent", "BytesSent" },
                   { "bytes_received", "BytesReceived" },
                   { "active_connections", "ActiveConnections" },
                   { "total_connections", "TotalConnections" } };

  g_string_append_c(out, '{');
  json_key(out, "id", TRUE);
  json_string(out, ctl_tunnel_id(path));
  json_key(out, "path", FALSE);
  json_string(out, path);
  json_key(out, "owner", FALSE);
  g_string_append_printf(out, "%u", (unsigned)owner);
  json_key(out, "user", FALSE);
  if (name != NULL)
    json_string(out, name);
  else
    g_string_append(out, "null");
  for (gsize i = 0; i < G_N_ELEMENTS(strings); i++) {
    json_key(out, strings[i].json, FALSE);
    json_string(out, lookup_string(properties, strings[i].property));
  }
  json_key(out, "forwards", FALSE);
  g_string_append_c(out, '[');
  for (gsize i = 0; forwards != NULL && i < g_variant_n_children(forwards); i++) {
    const char *forward;

    g_variant_get_child(forwards, i, "&s", &forward);
    if (i > 0)
      g_string_append_c(out, ',');
    json_string(out, forward);
  }
  g_string_append_c(out, ']');
  json_key(out, "listeners", FALSE);
  g_string_append_c(out, '[');
  for (gsize i = 0; listeners != NULL && i < g_variant_n_children(listeners); i++) {
    const char *forward, *address;
    guint16 port;

    g_variant_get_child(listeners, i, "(&s&sq)", &forward, &address, &port);
    if (i > 0)
      g_string_append_c(out, ',');
    g_string_append_c(out, '{');
    json_key(out, "forward", TRUE);
    json_string(out, forward);
    json_key(out, "address", FALSE);
    json_string(out, address);
    json_key(out, "port", FALSE);
    g_string_append_printf(out, "%u}", (unsigned)port);
  }
  g_string_append_c(out, ']');
  for (gsize i = 0; i < G_N_ELEMENTS(counters); i++) {
    json_key(out, counters[i].json, FALSE);
    g_string_append_printf(out, "%" G_GUINT64_FORMAT,
                           lookup_number(properties, counters[i].property));
  }
  json_key(out, "last_error", FALSE);
  json_string(out, lookup_string(properties, "LastError"));
  json_key(out, "created", FALSE);
  json_string(out, created);
  json_key(out, "created_usec", FALSE);
  g_string_append_printf(out, "%" G_GUINT64_FORMAT, lookup_number(properties, "Created"));
  json_key(out, "reconnect", FALSE);
  g_string_append(out, lookup_bool(properties, "Reconnect") ? "true" : "false");
  json_key(out, "persistent", FALSE);
  g_string_append(out, lookup_bool(properties, "Persistent") ? "true" : "false");
  json_key(out, "reconnects", FALSE);
  g_string_append_printf(out, "%" G_GUINT64_FORMAT,
                         lookup_number(properties, "Reconnects"));
  json_key(out, "retry_attempt", FALSE);
  g_string_append_printf(out, "%" G_GUINT64_FORMAT,
                         lookup_number(properties, "RetryAttempt"));
  json_key(out, "next_retry_usec", FALSE);
  g_string_append_printf(out, "%" G_GUINT64_FORMAT,
                         lookup_number(properties, "NextRetry"));
  g_string_append_c(out, '}');
}

/* ---- list ------------------------------------------------------------------ */

typedef struct {
  char *path;
  GVariant *properties; /* a{sv} of org.tunnelgate.Tunnel1 */
} Tunnel;

static void
tunnel_clear(gpointer data)
{
  Tunnel *tunnel = data;

  g_free(tunnel->path);
  g_clear_pointer(&tunnel->properties, g_variant_unref);
}

static gint
tunnel_compare(gconstpointer a, gconstpointer b)
{
  const Tunnel *ta = a, *tb = b;
  guint64 ia = g_ascii_strtoull(ctl_tunnel_id(ta->path), NULL, 10);
  guint64 ib = g_ascii_strtoull(ctl_tunnel_id(tb->path), NULL, 10);

  if (ia != ib)
    return ia < ib ? -1 : 1;
  return strcmp(ta->path, tb->path);
}

/* Every tunnel the caller may see, with all its properties, in Id order;
 * NULL after printing why. */
static GArray *
get_tunnels(int *status)
{
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GVariantIter) objects = NULL;
  const char *path;
  GVariant *interfaces;
  GArray *tunnels;

  reply = ctl_call(TG_MANAGER_PATH, TG_DBUS_OBJECT_MANAGER_INTERFACE, "GetManagedObjects",
                   NULL, G_VARIANT_TYPE("(a{oa{sa{sv}}})"), status);
  if (reply == NULL)
    return NULL;
  tunnels = g_array_new(FALSE, TRUE, sizeof(Tunnel));
  g_array_set_clear_func(tunnels, tunnel_clear);
  g_variant_get(reply, "(a{oa{sa{sv}}})", &objects);
  while (g_variant_iter_next(objects, "{&o@a{sa{sv}}}", &path, &interfaces)) {
    GVariant *properties =
        g_variant_lookup_value(interfaces, TG_TUNNEL_INTERFACE, G_VARIANT_TYPE_VARDICT);

    if (properties != NULL) {
      Tunnel tunnel = { g_strdup(path), properties };
      g_array_append_val(tunnels, tunnel);
    }
    g_variant_unref(interfaces);
  }
  g_array_sort(tunnels, tunnel_compare);
  return tunnels;
}

static char *
joined_forwards(GVariant *properties)
{
  g_autofree const char **forwards = NULL;

  if (!g_variant_lookup(properties, "Forwards", "^a&s", &forwards))
    return g_strdup("");
  return g_strjoinv(", ", (char **)forwards);
}

static void
print_table(GArray *tunnels)
{
  const char *headers[] = { "ID", "OWNER", "STATE", "DESTINATION", "FORWARDS" };
  int widths[G_N_ELEMENTS(headers)];
  g_autoptr(GPtrArray) cells = g_ptr_array_new_with_free_func(g_free);

  for (gsize c = 0; c < G_N_ELEMENTS(headers); c++)
    widths[c] = (int)strlen(headers[c]);
  for (guint i = 0; i < tunnels->len; i++) {
    const Tunnel *tunnel = &g_array_index(tunnels, Tunnel, i);
    guint32 uid = (guint32)lookup_number(tunnel->properties, "Owner");
    char *name = user_name(uid);
    char *row[G_N_ELEMENTS(headers)] = {
      g_strdup(ctl_tunnel_id(tunnel->path)),
      name != NULL ? name : g_strdup_printf("%u", (unsigned)uid),
      g_strdup(lookup_string(tunnel->properties, "State")),
      g_strdup(lookup_string(tunnel->properties, "Destination")),
      joined_forwards(tunnel->properties),
    };

    for (gsize c = 0; c < G_N_ELEMENTS(headers); c++) {
      widths[c] = MAX(widths[c], (int)g_utf8_strlen(row[c], -1));
      g_ptr_array_add(cells, row[c]);
    }
  }
  printf("%-*s  %-*s  %-*s  %-*s  %s\n", widths[0], headers[0], widths[1], headers[1],
         widths[2], headers[2], widths[3], headers[3], headers[4]);
  for (guint i = 0; i < cells->len; i += G_N_ELEMENTS(headers)) {
    char **row = (char **)&cells->pdata[i];

    printf("%-*s  %-*s  %-*s  %-*s  %s\n", widths[0], row[0], widths[1], row[1],
           widths[2], row[2], widths[3], row[3], row[4]);
  }
}

int
ctl_list(int argc, char **argv)
{
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json,
      "Print a JSON array with one object per tunnel (doc/cli.md)", NULL },
    { NULL },
  };
  g_autoptr(GArray) tunnels = NULL;
  int status;

  if (!ctl_parse_options(
          "list", "",
          "Lists the tunnels you may see (yours; everyone's with polkit's "
          "org.tunnelgate.manage) in ID order: ID, OWNER, STATE, DESTINATION and\n"
          "FORWARDS. With --json, a JSON array of objects with every property, for "
          "scripts.",
          entries, &argc, &argv))
    return CTL_EXIT_FAILURE;
  if (argc > 1) {
    ctl_error("list takes no arguments");
    return CTL_EXIT_FAILURE;
  }
  tunnels = get_tunnels(&status);
  if (tunnels == NULL)
    return status;
  if (json) {
    g_autoptr(GString) out = g_string_new("[");

    for (guint i = 0; i < tunnels->len; i++) {
      const Tunnel *tunnel = &g_array_index(tunnels, Tunnel, i);

      g_string_append(out, i > 0 ? ",\n" : "\n");
      ctl_append_tunnel_json(out, tunnel->path, tunnel->properties);
    }
    g_string_append(out, tunnels->len > 0 ? "\n]\n" : "]\n");
    fputs(out->str, stdout);
  } else if (tunnels->len == 0) {
    printf("No tunnels.\n");
  } else {
    print_table(tunnels);
  }
  return CTL_EXIT_OK;
}

/* ---- show ------------------------------------------------------------------ */

static void
print_properties(const char *path, GVariant *properties)
{
  guint32 uid = (guint32)lookup_number(properties, "Owner");
  g_autofree char *name = user_name(uid);
  g_autofree char *created = ctl_format_time(lookup_number(properties, "Created"));
  g_autofree const char **forwards = NULL;
  g_autoptr(GVariant) listeners =
      g_variant_lookup_value(properties, "Listeners", G_VARIANT_TYPE("a(ssq)"));
  static const char *const byte_counters[] = { "BytesSent", "BytesReceived" };
  GVariantIter iter;
  const char *forward, *address;
  guint16 port;
  gboolean first;

  printf(LABEL "%s\n", "Id:", ctl_tunnel_id(path));
  printf(LABEL "%s\n", "Path:", path);
  if (name != NULL)
    printf(LABEL "%s (uid %u)\n", "Owner:", name, (unsigned)uid);
  else
    printf(LABEL "uid %u\n", "Owner:", (unsigned)uid);
  print_text("Destination:", lookup_string(properties, "Destination"));
  print_text("Description:", lookup_string(properties, "Description"));
  g_autofree char *retry = retry_text(properties);

  printf(LABEL "%s%s%s%s\n", "State:", lookup_string(properties, "State"),
         retry != NULL ? " (" : "", retry != NULL ? retry : "", retry != NULL ? ")" : "");
  printf(LABEL "%s\n", "Created:", created);
  if (lookup_bool(properties, "Reconnect"))
    printf(LABEL "yes (%" G_GUINT64_FORMAT " times so far)\n",
           "Reconnect:", lookup_number(properties, "Reconnects"));
  else
    printf(LABEL "no\n", "Reconnect:");
  printf(LABEL "%s\n",
         "Persistent:", lookup_bool(properties, "Persistent") ? "yes" : "no");

  if (!g_variant_lookup(properties, "Forwards", "^a&s", &forwards) || forwards[0] == NULL)
    printf(LABEL "(none)\n", "Forwards:");
  for (gsize i = 0; forwards != NULL && forwards[i] != NULL; i++)
    printf(LABEL "%s\n", i == 0 ? "Forwards:" : "", forwards[i]);

  first = TRUE;
  if (listeners != NULL) {
    g_variant_iter_init(&iter, listeners);
    while (g_variant_iter_next(&iter, "(&s&sq)", &forward, &address, &port)) {
      g_autofree char *where = ctl_format_address(address, port);

      printf(LABEL "%s (%s)\n", first ? "Listeners:" : "", where, forward);
      first = FALSE;
    }
  }
  if (first)
    printf(LABEL "(none)\n", "Listeners:");

  for (gsize i = 0; i < G_N_ELEMENTS(byte_counters); i++) {
    guint64 bytes = lookup_number(properties, byte_counters[i]);
    g_autofree char *human = ctl_format_bytes(bytes);
    g_autofree char *label = g_strconcat(byte_counters[i], ":", NULL);

    printf(LABEL "%s (%" G_GUINT64_FORMAT " bytes)\n", label, human, bytes);
  }
  printf(LABEL "%" G_GUINT64_FORMAT "\n",
         "ActiveConnections:", lookup_number(properties, "ActiveConnections"));
  printf(LABEL "%" G_GUINT64_FORMAT "\n",
         "TotalConnections:", lookup_number(properties, "TotalConnections"));
  print_text("LastError:", lookup_string(properties, "LastError"));
}

int
ctl_show(int argc, char **argv)
{
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json,
      "Print one JSON object, as in 'list --json'", NULL },
    { NULL },
  };
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GVariant) properties = NULL;
  g_autofree char *path = NULL;
  int status;

  if (!ctl_parse_options("show", "ID",
                         "Shows every property of the tunnel ID (its Id, or its object "
                         "path): byte counters in binary units (KiB, MiB, ...) with the "
                         "exact count, times as local ISO 8601.",
                         entries, &argc, &argv))
    return CTL_EXIT_FAILURE;
  if (argc != 2) {
    ctl_error("show takes one tunnel ID; try 'tunnelgatectl show --help'");
    return CTL_EXIT_FAILURE;
  }
  path = ctl_tunnel_path(argv[1]);
  if (path == NULL)
    return CTL_EXIT_FAILURE;
  reply = ctl_call(path, TG_DBUS_PROPERTIES_INTERFACE, "GetAll",
                   g_variant_new("(s)", TG_TUNNEL_INTERFACE), G_VARIANT_TYPE("(a{sv})"),
                   &status);
  if (reply == NULL)
    return status;
  properties = g_variant_get_child_value(reply, 0);
  if (json) {
    g_autoptr(GString) out = g_string_new(NULL);

    ctl_append_tunnel_json(out, path, properties);
    printf("%s\n", out->str);
  } else {
    print_properties(path, properties);
  }
  return CTL_EXIT_OK;
}

/* ---- watch ----------------------------------------------------------------- */

typedef struct {
  GMainLoop *loop;
  GDBusConnection *bus;
  gint64 count; /* events left to print; < 0: no limit */
} Watch;

/* One event: a line with the local time in front; stops after --count. */
static void
watch_print(Watch *watch, const char *id, const char *text)
{
  g_autoptr(GDateTime) now = g_date_time_new_now_local();
  g_autofree char *when = g_date_time_format(now, "%Y-%m-%dT%H:%M:%S%:z");

  printf("%s tunnel %s %s\n", when, id, text);
  fflush(stdout);
  if (watch->count > 0 && --watch->count == 0)
    g_main_loop_quit(watch->loop);
}

static void
watch_interfaces_added(GVariant *parameters, Watch *watch)
{
  const char *path;
  g_autoptr(GVariant) interfaces = NULL;
  g_autoptr(GVariant) properties = NULL;
  g_autofree char *text = NULL;
  g_autofree char *name = NULL;
  guint32 uid;

  g_variant_get(parameters, "(&o@a{sa{sv}})", &path, &interfaces);
  properties =
      g_variant_lookup_value(interfaces, TG_TUNNEL_INTERFACE, G_VARIANT_TYPE_VARDICT);
  if (properties == NULL)
    return;
  uid = (guint32)lookup_number(properties, "Owner");
  name = user_name(uid);
  if (name == NULL)
    name = g_strdup_printf("uid %u", (unsigned)uid);
  text = g_strdup_printf("added: owner %s, state %s", name,
                         lookup_string(properties, "State"));
  watch_print(watch, ctl_tunnel_id(path), text);
}

static void
watch_interfaces_removed(GVariant *parameters, Watch *watch)
{
  const char *path;
  g_autofree const char **interfaces = NULL;

  g_variant_get(parameters, "(&o^a&s)", &path, &interfaces);
  if (g_strv_contains(interfaces, TG_TUNNEL_INTERFACE))
    watch_print(watch, ctl_tunnel_id(path), "removed");
}

/* LastError of a failed tunnel, if the caller may read it; NULL otherwise. */
static char *
watch_last_error(Watch *watch, const char *path)
{
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      watch->bus, TG_BUS_NAME, path, TG_DBUS_PROPERTIES_INTERFACE, "Get",
      g_variant_new("(ss)", TG_TUNNEL_INTERFACE, "LastError"), G_VARIANT_TYPE("(v)"),
      G_DBUS_CALL_FLAGS_NONE, 10000, NULL, NULL);
  g_autoptr(GVariant) value = NULL;

  if (reply == NULL)
    return NULL;
  g_variant_get(reply, "(v)", &value);
  if (!g_variant_is_of_type(value, G_VARIANT_TYPE_STRING) ||
      *g_variant_get_string(value, NULL) == '\0')
    return NULL;
  return tg_text_printable(g_variant_get_string(value, NULL), G_MAXSIZE);
}

static void
watch_properties_changed(const char *path, GVariant *parameters, Watch *watch)
{
  const char *interface, *state = NULL;
  g_autoptr(GVariant) changed = NULL;
  g_autofree const char **invalidated = NULL;
  g_autoptr(GString) text = g_string_new(NULL);
  g_autoptr(GString) traffic = g_string_new(NULL);

  g_variant_get(parameters, "(&s@a{sv}^a&s)", &interface, &changed, &invalidated);
  if (!g_str_equal(interface, TG_TUNNEL_INTERFACE))
    return;
  if (g_variant_lookup(changed, "State", "&s", &state)) {
    g_string_append_printf(text, "state %s", state);
    if (g_str_equal(state, "reconnecting")) {
      g_autofree char *retry = retry_text(changed);
      g_autofree char *why =
          tg_text_printable(lookup_string(changed, "LastError"), G_MAXSIZE);

      g_string_append_printf(text, " (%s%s%s)", retry != NULL ? retry : "",
                             *why != '\0' ? ": " : "", why);
    } else if (g_str_equal(state, "failed")) {
      const char *last_error = NULL;
      g_autofree char *why = NULL;

      if (g_variant_lookup(changed, "LastError", "&s", &last_error) &&
          *last_error != '\0')
        why = tg_text_printable(last_error, G_MAXSIZE);
      else
        why = watch_last_error(watch, path);
      if (why != NULL)
        g_string_append_printf(text, " (%s)", why);
    }
  }
  if (has_key(changed, "BytesSent")) {
    g_autofree char *bytes = ctl_format_bytes(lookup_number(changed, "BytesSent"));
    g_string_append_printf(traffic, "%ssent %s", traffic->len ? ", " : "", bytes);
  }
  if (has_key(changed, "BytesReceived")) {
    g_autofree char *bytes = ctl_format_bytes(lookup_number(changed, "BytesReceived"));
    g_string_append_printf(traffic, "%sreceived %s", traffic->len ? ", " : "", bytes);
  }
  if (has_key(changed, "ActiveConnections"))
    g_string_append_printf(traffic, "%s%" G_GUINT64_FORMAT " active",
                           traffic->len ? ", " : "",
                           lookup_number(changed, "ActiveConnections"));
  if (has_key(changed, "TotalConnections"))
    g_string_append_printf(traffic, "%s%" G_GUINT64_FORMAT " connections in all",
                           traffic->len ? ", " : "",
                           lookup_number(changed, "TotalConnections"));
  if (traffic->len > 0)
    g_string_append_printf(text, "%straffic: %s", text->len ? "; " : "", traffic->str);
  {
    /* the other properties (Forwards, Listeners, ...): named, not printed */
    static const char *const shown[] = {
      "State",         "LastError",         "RetryAttempt",     "NextRetry", "BytesSent",
      "BytesReceived", "ActiveConnections", "TotalConnections", NULL
    };
    g_autoptr(GPtrArray) names = g_ptr_array_new();
    GVariantIter iter;
    const char *key;

    g_variant_iter_init(&iter, changed);
    while (g_variant_iter_next(&iter, "{&sv}", &key, NULL))
      if (!g_strv_contains(shown, key))
        g_ptr_array_add(names, (gpointer)key);
    for (guint i = 0; invalidated[i] != NULL; i++)
      g_ptr_array_add(names, (gpointer)invalidated[i]);
    if (names->len > 0) {
      g_autofree char *joined = NULL;

      g_ptr_array_add(names, NULL);
      joined = g_strjoinv(", ", (char **)names->pdata);
      g_string_append_printf(text, "%schanged: %s", text->len ? "; " : "", joined);
    }
  }
  if (text->len > 0)
    watch_print(watch, ctl_tunnel_id(path), text->str);
}

static void
watch_signal(GDBusConnection *bus, const char *sender, const char *path,
             const char *interface, const char *member, GVariant *parameters,
             gpointer user_data)
{
  Watch *watch = user_data;

  if (g_str_equal(member, "InterfacesAdded") &&
      g_variant_is_of_type(parameters, G_VARIANT_TYPE("(oa{sa{sv}})")))
    watch_interfaces_added(parameters, watch);
  else if (g_str_equal(member, "InterfacesRemoved") &&
           g_variant_is_of_type(parameters, G_VARIANT_TYPE("(oas)")))
    watch_interfaces_removed(parameters, watch);
  else if (g_str_equal(member, "PropertiesChanged") &&
           g_str_has_prefix(path, TG_TUNNEL_PATH_PREFIX) &&
           g_variant_is_of_type(parameters, G_VARIANT_TYPE("(sa{sv}as)")))
    watch_properties_changed(path, parameters, watch);
}

static gboolean
watch_interrupted(gpointer user_data)
{
  Watch *watch = user_data;

  g_main_loop_quit(watch->loop);
  return G_SOURCE_CONTINUE;
}

int
ctl_watch(int argc, char **argv)
{
  int count = 0;
  GOptionEntry entries[] = {
    { "count", 'n', 0, G_OPTION_ARG_INT, &count, "Stop after N events", "N" },
    { NULL },
  };
  g_autoptr(GVariant) ping = NULL;
  Watch watch = { 0 };
  guint subscriptions[2];
  int status;

  if (!ctl_parse_options(
          "watch", "",
          "Prints what happens to tunnels as it happens, one line per event, until\n"
          "interrupted (or --count events): tunnels added and removed, state changes\n"
          "(with LastError when a tunnel fails), traffic counters (at most once\na "
          "second per tunnel) and properties that changed. The daemon tells each\n"
          "connection only about the tunnels it may read: your own, or every user's\n"
          "with org.tunnelgate.manage.",
          entries, &argc, &argv))
    return CTL_EXIT_FAILURE;
  if (argc > 1 || count < 0) {
    ctl_error(argc > 1 ? "watch takes no arguments" : "--count must not be negative");
    return CTL_EXIT_FAILURE;
  }
  watch.bus = ctl_bus();
  if (watch.bus == NULL)
    return CTL_EXIT_BUS;
  watch.count = count > 0 ? count : -1;
  watch.loop = g_main_loop_new(NULL, FALSE);
  subscriptions[0] = g_dbus_connection_signal_subscribe(
      watch.bus, TG_BUS_NAME, TG_DBUS_OBJECT_MANAGER_INTERFACE, NULL, TG_MANAGER_PATH,
      NULL, G_DBUS_SIGNAL_FLAGS_NONE, watch_signal, &watch, NULL);
  subscriptions[1] = g_dbus_connection_signal_subscribe(
      watch.bus, TG_BUS_NAME, TG_DBUS_PROPERTIES_INTERFACE, "PropertiesChanged", NULL,
      NULL, G_DBUS_SIGNAL_FLAGS_NONE, watch_signal, &watch, NULL);
  /* an authorized call makes this connection one the daemon tells about
   * tunnels (and, sent after the match rules, it is answered after the bus
   * has them) */
  ping = ctl_call(TG_MANAGER_PATH, TG_DBUS_OBJECT_MANAGER_INTERFACE, "GetManagedObjects",
                  NULL, G_VARIANT_TYPE("(a{oa{sa{sv}}})"), &status);
  if (ping == NULL) {
    g_dbus_connection_signal_unsubscribe(watch.bus, subscriptions[0]);
    g_dbus_connection_signal_unsubscribe(watch.bus, subscriptions[1]);
    g_main_loop_unref(watch.loop);
    return status;
  }
  fprintf(stderr, "Watching tunnels; interrupt to stop.\n");
  g_unix_signal_add(SIGINT, watch_interrupted, &watch);
  g_unix_signal_add(SIGTERM, watch_interrupted, &watch);
  g_main_loop_run(watch.loop);
  g_dbus_connection_signal_unsubscribe(watch.bus, subscriptions[0]);
  g_dbus_connection_signal_unsubscribe(watch.bus, subscriptions[1]);
  g_main_loop_unref(watch.loop);
  return CTL_EXIT_OK;
}
