/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "registry.h"

#include "tg-error.h"
#include "tg-names.h"

typedef struct {
  char *id;
  guint64 number; /* id as a number: the creation order */
  uid_t owner;
  gpointer tunnel;
} Entry;

/* A connection the daemon tells about tunnels. */
typedef struct {
  uid_t uid;
  gboolean manage;
  guint name_watch; /* removes the watcher when its connection leaves */
} Watcher;

struct _TgRegistry {
  GDBusConnection *bus;
  TgAuthz *authz;
  GDestroyNotify free_tunnel;
  GHashTable *tunnels; /* id -> Entry* */
  guint64 last_id;
  GHashTable *usage;     /* uid -> TgUsage* */
  TgUsage *daemon_usage; /* everyone's */
  GHashTable *resolving; /* uid -> number of its calls waiting (> 0) */
  GHashTable *watchers;  /* unique bus name -> Watcher* */
  guint watchers_timer;
  gboolean stopping;
};

static void
entry_free(gpointer data)
{
  Entry *entry = data;
  g_free(entry->id);
  g_free(entry);
}

static void
watcher_free(gpointer data)
{
  Watcher *watcher = data;

  g_bus_unwatch_name(watcher->name_watch);
  g_free(watcher);
}

static void
watcher_vanished(GDBusConnection *connection, const char *name, gpointer user_data)
{
  TgRegistry *registry = user_data;

  g_hash_table_remove(registry->watchers, name);
}

/* The authorization gate's report of every authorized call. */
static void
watcher_authorized(const TgCaller *caller, gboolean manage_checked,
                   gboolean manage_granted, gpointer user_data)
{
  TgRegistry *registry = user_data;
  Watcher *watcher = g_hash_table_lookup(registry->watchers, caller->bus_name);

  if (watcher == NULL) {
    watcher = g_new0(Watcher, 1);
    watcher->uid = caller->uid;
    g_hash_table_insert(registry->watchers, g_strdup(caller->bus_name), watcher);
    /* a name already gone is reported at once, and the watcher goes */
    watcher->name_watch = g_bus_watch_name_on_connection(
        registry->bus, caller->bus_name, G_BUS_NAME_WATCHER_FLAGS_NONE, NULL,
        watcher_vanished, registry, NULL);
  }
  if (manage_checked)
    watcher->manage = manage_granted;
}

static void
watcher_rechecked(const char *bus_name, gboolean allowed, gpointer user_data)
{
  TgRegistry *registry = user_data;
  Watcher *watcher = g_hash_table_lookup(registry->watchers, bus_name);

  if (watcher != NULL)
    watcher->manage = allowed;
}

static gboolean
recheck_watchers(gpointer user_data)
{
  TgRegistry *registry = user_data;
  GHashTableIter iter;
  gpointer name, value;

  g_hash_table_iter_init(&iter, registry->watchers);
  while (g_hash_table_iter_next(&iter, &name, &value)) {
    if (((Watcher *)value)->manage)
      tg_authz_check_quietly(registry->authz, name, TG_ACTION_MANAGE, watcher_rechecked,
                             registry);
  }
  return G_SOURCE_CONTINUE;
}

TgRegistry *
tg_registry_new(GDBusConnection *bus, TgAuthz *authz, GDestroyNotify free_tunnel)
{
  TgRegistry *registry = g_new0(TgRegistry, 1);

  registry->bus = bus != NULL ? g_object_ref(bus) : NULL;
  registry->authz = authz;
  registry->free_tunnel = free_tunnel;
  registry->tunnels = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, entry_free);
  registry->usage =
      g_hash_table_new_full(NULL, NULL, NULL, (GDestroyNotify)tg_usage_unref);
  registry->resolving = g_hash_table_new(NULL, NULL);
  registry->daemon_usage = tg_usage_new();
  registry->watchers =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, watcher_free);
  if (authz != NULL) {
    tg_authz_set_authorized_func(authz, watcher_authorized, registry);
    registry->watchers_timer =
        g_timeout_add_seconds(TG_WATCHER_RECHECK_SECONDS, recheck_watchers, registry);
  }
  return registry;
}

void
tg_registry_free(TgRegistry *registry)
{
  GHashTableIter iter;
  gpointer value;

  if (registry == NULL)
    return;
  g_hash_table_iter_init(&iter, registry->tunnels);
  while (g_hash_table_iter_next(&iter, NULL, &value)) {
    gpointer tunnel = ((Entry *)value)->tunnel;

    g_hash_table_iter_remove(&iter);
    registry->free_tunnel(tunnel);
  }
  if (registry->authz != NULL)
    tg_authz_set_authorized_func(registry->authz, NULL, NULL);
  g_clear_handle_id(&registry->watchers_timer, g_source_remove);
  g_hash_table_unref(registry->tunnels);
  g_hash_table_unref(registry->watchers);
  g_hash_table_unref(registry->resolving);
  g_hash_table_unref(registry->usage);
  tg_usage_unref(registry->daemon_usage);
  g_clear_object(&registry->bus);
  g_free(registry);
}

/* ---- tunnels ---- */

char *
tg_registry_new_tunnel_id(TgRegistry *registry)
{
  return g_strdup_printf("%" G_GUINT64_FORMAT, ++registry->last_id);
}

void
tg_registry_reserve_tunnel_id(TgRegistry *registry, const char *id)
{
  guint64 number = 0;

  g_return_if_fail(g_ascii_string_to_unsigned(id, 10, 1, G_MAXUINT64, &number, NULL));
  registry->last_id = MAX(registry->last_id, number);
}

void
tg_registry_add_tunnel(TgRegistry *registry, const char *id, uid_t owner, gpointer tunnel)
{
  Entry *entry = g_new0(Entry, 1);

  g_return_if_fail(!g_hash_table_contains(registry->tunnels, id));
  entry->id = g_strdup(id);
  entry->number = g_ascii_strtoull(id, NULL, 10);
  entry->owner = owner;
  entry->tunnel = tunnel;
  g_hash_table_insert(registry->tunnels, entry->id, entry);
}

void
tg_registry_remove_tunnel(TgRegistry *registry, const char *id)
{
  Entry *entry = g_hash_table_lookup(registry->tunnels, id);
  gpointer tunnel;

  if (entry == NULL)
    return;
  tunnel = entry->tunnel;
  g_hash_table_remove(registry->tunnels, id); /* @id may be the tunnel's: gone now */
  registry->free_tunnel(tunnel);
}

gpointer
tg_registry_find_tunnel(TgRegistry *registry, const char *path)
{
  Entry *entry;

  if (!g_str_has_prefix(path, TG_TUNNEL_PATH_PREFIX))
    return NULL;
  entry = g_hash_table_lookup(registry->tunnels, path + strlen(TG_TUNNEL_PATH_PREFIX));
  return entry != NULL ? entry->tunnel : NULL;
}

static gint
compare_entries(gconstpointer a, gconstpointer b)
{
  const Entry *x = *(const Entry *const *)a;
  const Entry *y = *(const Entry *const *)b;

  return x->number < y->number ? -1 : x->number > y->number;
}

gboolean
tg_registry_sees(uid_t uid, gboolean manage, uid_t owner)
{
  return uid == owner || manage;
}

static GPtrArray *
list_tunnels(TgRegistry *registry, gboolean all, uid_t uid, gboolean manage)
{
  g_autoptr(GPtrArray) entries = g_ptr_array_new();
  GPtrArray *tunnels = g_ptr_array_new();
  GHashTableIter iter;
  gpointer value;

  g_hash_table_iter_init(&iter, registry->tunnels);
  while (g_hash_table_iter_next(&iter, NULL, &value)) {
    if (all || tg_registry_sees(uid, manage, ((Entry *)value)->owner))
      g_ptr_array_add(entries, value);
  }
  g_ptr_array_sort(entries, compare_entries);
  for (guint i = 0; i < entries->len; i++)
    g_ptr_array_add(tunnels, ((Entry *)entries->pdata[i])->tunnel);
  return tunnels;
}

GPtrArray *
tg_registry_list_tunnels(TgRegistry *registry)
{
  return list_tunnels(registry, TRUE, 0, FALSE);
}

GPtrArray *
tg_registry_visible_tunnels(TgRegistry *registry, uid_t uid, gboolean manage)
{
  return list_tunnels(registry, FALSE, uid, manage);
}

char **
tg_registry_visible_ids(TgRegistry *registry, const char *bus_name)
{
  Watcher *watcher =
      bus_name != NULL ? g_hash_table_lookup(registry->watchers, bus_name) : NULL;
  g_autoptr(GPtrArray) entries = g_ptr_array_new();
  GPtrArray *ids = g_ptr_array_new();
  GHashTableIter iter;
  gpointer value;

  g_hash_table_iter_init(&iter, registry->tunnels);
  while (watcher != NULL && g_hash_table_iter_next(&iter, NULL, &value)) {
    if (tg_registry_sees(watcher->uid, watcher->manage, ((Entry *)value)->owner))
      g_ptr_array_add(entries, value);
  }
  g_ptr_array_sort(entries, compare_entries);
  for (guint i = 0; i < entries->len; i++)
    g_ptr_array_add(ids, g_strdup(((Entry *)entries->pdata[i])->id));
  g_ptr_array_add(ids, NULL);
  return (char **)g_ptr_array_free(ids, FALSE);
}

guint
tg_registry_count_tunnels(TgRegistry *registry, uid_t owner)
{
  GHashTableIter iter;
  gpointer value;
  guint n = 0;

  g_hash_table_iter_init(&iter, registry->tunnels);
  while (g_hash_table_iter_next(&iter, NULL, &value))
    n += ((Entry *)value)->owner == owner;
  return n;
}

guint
tg_registry_n_tunnels(TgRegistry *registry)
{
  return g_hash_table_size(registry->tunnels);
}

/* ---- per-user usage ---- */

TgUsage *
tg_registry_usage(TgRegistry *registry, uid_t uid)
{
  TgUsage *usage = g_hash_table_lookup(registry->usage, GUINT_TO_POINTER(uid));

  if (usage == NULL) {
    usage = tg_usage_new(); /* the table's reference */
    g_hash_table_insert(registry->usage, GUINT_TO_POINTER(uid), usage);
  }
  return tg_usage_ref(usage);
}

TgUsage *
tg_registry_daemon_usage(TgRegistry *registry)
{
  return tg_usage_ref(registry->daemon_usage);
}

/* ---- calls waiting for the resolver ---- */

gboolean
tg_registry_begin_resolving(TgRegistry *registry, uid_t uid, GError **error)
{
  guint n =
      GPOINTER_TO_UINT(g_hash_table_lookup(registry->resolving, GUINT_TO_POINTER(uid)));

  if (n >= TG_MAX_RESOLVING_PER_USER) {
    g_set_error(error, TG_ERROR, TG_ERROR_LIMIT_EXCEEDED,
                "%d calls of yours already wait for names to be resolved; try again "
                "when they are done",
                TG_MAX_RESOLVING_PER_USER);
    return FALSE;
  }
  g_hash_table_insert(registry->resolving, GUINT_TO_POINTER(uid),
                      GUINT_TO_POINTER(n + 1));
  return TRUE;
}

void
tg_registry_end_resolving(TgRegistry *registry, uid_t uid)
{
  guint n =
      GPOINTER_TO_UINT(g_hash_table_lookup(registry->resolving, GUINT_TO_POINTER(uid)));

  g_return_if_fail(n > 0);
  if (n == 1)
    g_hash_table_remove(registry->resolving, GUINT_TO_POINTER(uid));
  else
    g_hash_table_insert(registry->resolving, GUINT_TO_POINTER(uid),
                        GUINT_TO_POINTER(n - 1));
}

guint
tg_registry_n_resolving(TgRegistry *registry)
{
  return g_hash_table_size(registry->resolving);
}

/* ---- the daemon's state ---- */

void
tg_registry_stop(TgRegistry *registry)
{
  registry->stopping = TRUE;
}

gboolean
tg_registry_check_running(TgRegistry *registry, GError **error)
{
  if (!registry->stopping)
    return TRUE;
  g_set_error_literal(error, TG_ERROR, TG_ERROR_FAILED, "tunnelgated is stopping");
  return FALSE;
}

/* ---- who hears signals ---- */

void
tg_registry_emit(TgRegistry *registry, uid_t owner, const char *path,
                 const char *interface, const char *signal_name, GVariant *parameters)
{
  GHashTableIter iter;
  gpointer name, value;

  g_variant_ref_sink(parameters);
  g_hash_table_iter_init(&iter, registry->watchers);
  while (g_hash_table_iter_next(&iter, &name, &value)) {
    const Watcher *watcher = value;

    if (tg_registry_sees(watcher->uid, watcher->manage, owner))
      g_dbus_connection_emit_signal(registry->bus, name, path, interface, signal_name,
                                    parameters, NULL);
  }
  g_variant_unref(parameters);
}
