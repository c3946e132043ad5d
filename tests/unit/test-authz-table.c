/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The one table of authz.c against the D-Bus interfaces in dbus/: every
 * method the daemon exposes has exactly one row naming exactly one polkit
 * action (or none, for what is public), and no row names a method that does
 * not exist. */
#include <glib.h>
#include <gio/gio.h>

#include "authz.h"

static GDBusNodeInfo *
load_interface(const char *file)
{
  g_autofree char *path = g_build_filename(TG_SOURCE_ROOT, "dbus", file, NULL);
  g_autofree char *xml = NULL;
  g_autoptr(GError) error = NULL;
  GDBusNodeInfo *node;

  g_assert_true(g_file_get_contents(path, &xml, NULL, &error));
  node = g_dbus_node_info_new_for_xml(xml, &error);
  g_assert_no_error(error);
  return node;
}

static gboolean
one_action_or_none(TgAction action)
{
  return action == TG_ACTION_NONE || (action & (action - 1)) == 0;
}

/* "interface method" for every method (and Get/GetAll for every interface
 * with properties) that the XML files declare. */
static GHashTable *
declared_methods(void)
{
  static const char *const files[] = { "org.tunnelgate.Manager1.xml",
                                       "org.tunnelgate.Tunnel1.xml",
                                       "org.freedesktop.DBus.ObjectManager.xml" };
  GHashTable *declared = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);

  for (gsize f = 0; f < G_N_ELEMENTS(files); f++) {
    g_autoptr(GDBusNodeInfo) node = load_interface(files[f]);
    for (GDBusInterfaceInfo **i = node->interfaces; i != NULL && *i != NULL; i++) {
      for (GDBusMethodInfo **m = (*i)->methods; m != NULL && *m != NULL; m++)
        g_hash_table_add(declared, g_strdup_printf("%s %s", (*i)->name, (*m)->name));
      if ((*i)->properties != NULL && (*i)->properties[0] != NULL) {
        g_hash_table_add(declared, g_strdup_printf("%s Get", (*i)->name));
        g_hash_table_add(declared, g_strdup_printf("%s GetAll", (*i)->name));
      }
    }
  }
  return declared;
}

static void
test_every_method_has_one_row(void)
{
  g_autoptr(GHashTable) declared = declared_methods();
  GHashTableIter iter;
  gpointer key;

  g_assert_cmpuint(g_hash_table_size(declared), >=, 14);
  g_hash_table_iter_init(&iter, declared);
  while (g_hash_table_iter_next(&iter, &key, NULL)) {
    g_auto(GStrv) parts = g_strsplit(key, " ", 2);
    TgAction action = 0;
    gsize n_rows, rows = 0;
    const TgMethodAction *table = tg_authz_table(&n_rows);

    if (!tg_authz_method_action(parts[0], parts[1], &action))
      g_error("%s has no row in authz.c's table", (const char *)key);
    g_assert_true(one_action_or_none(action));
    for (gsize i = 0; i < n_rows; i++)
      rows += g_str_equal(table[i].interface, parts[0]) &&
              g_str_equal(table[i].method, parts[1]);
    g_assert_cmpuint(rows, ==, 1);
  }
}

static void
test_no_row_without_a_method(void)
{
  g_autoptr(GHashTable) declared = declared_methods();
  gsize n_rows;
  const TgMethodAction *table = tg_authz_table(&n_rows);

  g_assert_cmpuint(n_rows, ==, g_hash_table_size(declared));
  for (gsize i = 0; i < n_rows; i++) {
    g_autofree char *key = g_strdup_printf("%s %s", table[i].interface, table[i].method);
    if (!g_hash_table_contains(declared, key))
      g_error("table row %s names no method of dbus/*.xml", key);
  }
}

static void
test_only_public_parts_need_nothing(void)
{
  gsize n_rows;
  const TgMethodAction *table = tg_authz_table(&n_rows);
  TgAction action;

  /* what is public: the Manager's own properties */
  for (gsize i = 0; i < n_rows; i++) {
    gboolean manager_property =
        g_str_equal(table[i].interface, "org.tunnelgate.Manager1") &&
        (g_str_equal(table[i].method, "Get") || g_str_equal(table[i].method, "GetAll"));
    g_assert_cmpint(table[i].action == TG_ACTION_NONE, ==, manager_property);
  }
  /* administration needs manage; an unknown method has no row */
  g_assert_true(
      tg_authz_method_action("org.tunnelgate.Manager1", "ReloadPolicy", &action));
  g_assert_cmpint(action, ==, TG_ACTION_MANAGE);
  g_assert_false(tg_authz_method_action("org.tunnelgate.Manager1", "Shutdown", &action));
  g_assert_false(tg_authz_method_action("org.tunnelgate.Tunnel1", "OpenTunnel", &action));
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/authz/table/every-method-has-one-row", test_every_method_has_one_row);
  g_test_add_func("/authz/table/no-row-without-a-method", test_no_row_without_a_method);
  g_test_add_func("/authz/table/only-public-parts-need-nothing",
                  test_only_public_parts_need_nothing);
  return g_test_run();
}
