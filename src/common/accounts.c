/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "accounts.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>

static void
account_free(gpointer data)
{
  TgAccount *account = data;

  g_free(account->name);
  g_free(account);
}

GPtrArray *
tg_accounts_list(void)
{
  static GMutex lock;
  GPtrArray *accounts = g_ptr_array_new_with_free_func(account_free);
  g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
  gsize size = 1024;
  g_autofree char *buffer = g_malloc(size);
  struct passwd entry, *result;

  g_mutex_lock(&lock);
  setpwent();
  for (;;) {
    int rc = getpwent_r(&entry, buffer, size, &result);

    if (rc == ERANGE && size < 1024 * 1024) {
      size *= 2;
      buffer = g_realloc(buffer, size);
      continue;
    }
    if (rc != 0 || result == NULL)
      break;
    if (!g_hash_table_contains(seen, entry.pw_name)) {
      TgAccount *account = g_new0(TgAccount, 1);

      account->uid = entry.pw_uid;
      account->name = g_strdup(entry.pw_name);
      g_ptr_array_add(accounts, account);
      g_hash_table_add(seen, account->name);
    }
  }
  endpwent();
  g_mutex_unlock(&lock);
  return accounts;
}

GPtrArray *
tg_accounts_list_groups(void)
{
  static GMutex lock;
  GPtrArray *groups = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
  gsize size = 4096;
  g_autofree char *buffer = g_malloc(size);
  struct group entry, *result;

  g_mutex_lock(&lock);
  setgrent();
  for (;;) {
    int rc = getgrent_r(&entry, buffer, size, &result);

    if (rc == ERANGE && size < 16 * 1024 * 1024) {
      size *= 2;
      buffer = g_realloc(buffer, size);
      continue;
    }
    if (rc != 0 || result == NULL)
      break;
    if (!g_hash_table_contains(seen, entry.gr_name)) {
      char *name = g_strdup(entry.gr_name);

      g_ptr_array_add(groups, name);
      g_hash_table_add(seen, name);
    }
  }
  endgrent();
  g_mutex_unlock(&lock);
  return groups;
}

/* What a lookup that found nothing means: 0 no such entry, -1 NSS could
 * not answer. */
static int
nss_answer(int status)
{
  return status == 0 || status == ENOENT || status == ESRCH || status == EBADF ||
                 status == EPERM
             ? 0
             : -1;
}

int
tg_accounts_lookup_user(const char *name, guint32 *uid)
{
  gsize size = 1024;

  for (;;) {
    g_autofree char *buffer = g_malloc(size);
    struct passwd entry, *result = NULL;
    int status = getpwnam_r(name, &entry, buffer, size, &result);

    if (status == ERANGE && size < 1024 * 1024) {
      size *= 2;
      continue;
    }
    if (result != NULL) {
      *uid = entry.pw_uid;
      return 1;
    }
    return nss_answer(status);
  }
}

int
tg_accounts_group_members(const char *name, GPtrArray *members)
{
  gsize size = 4096;

  for (;;) {
    g_autofree char *buffer = g_malloc(size);
    struct group entry, *result = NULL;
    int status = getgrnam_r(name, &entry, buffer, size, &result);

    if (status == ERANGE && size < 16 * 1024 * 1024) {
      size *= 2;
      continue;
    }
    if (result != NULL) {
      for (guint i = 0; entry.gr_mem[i] != NULL; i++)
        g_ptr_array_add(members, g_strdup(entry.gr_mem[i]));
      return 1;
    }
    return nss_answer(status);
  }
}

int
tg_accounts_lookup_uid(guint32 uid, char **name, guint32 *gid)
{
  gsize size = 1024;

  for (;;) {
    g_autofree char *buffer = g_malloc(size);
    struct passwd entry, *result = NULL;
    int status = getpwuid_r(uid, &entry, buffer, size, &result);

    if (status == ERANGE && size < 1024 * 1024) {
      size *= 2;
      continue;
    }
    if (result != NULL) {
      *name = g_strdup(entry.pw_name);
      *gid = entry.pw_gid;
      return 1;
    }
    return nss_answer(status);
  }
}

char *
tg_accounts_name_of(guint32 uid)
{
  char *name = NULL;
  guint32 gid;

  return tg_accounts_lookup_uid(uid, &name, &gid) == 1 ? name : NULL;
}
