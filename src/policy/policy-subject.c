/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Who a caller is, for Match User/Group: the one part of the policy that
 * asks the system (NSS). Kept apart so the rest stays pure and testable. */
#include "policy.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include "tg-error.h"

/* Buffers for the *_r calls grow up to this; real entries are far smaller. */
#define MAX_NSS_BUFFER (1024 * 1024)
/* getgrouplist() says how many it needs; this is only the first guess. */
#define INITIAL_GROUPS 64

static gsize
initial_buffer_size(int name)
{
  long size = sysconf(name);

  return size > 0 ? (gsize)size : 4096;
}

/* Returns the user name and primary group of @uid, or FALSE. */
static gboolean
lookup_user(uid_t uid, char **user, gid_t *gid, GError **error)
{
  gsize size = initial_buffer_size(_SC_GETPW_R_SIZE_MAX);

  for (;;) {
    g_autofree char *buffer = g_malloc(size);
    struct passwd entry;
    struct passwd *result = NULL;
    int status = getpwuid_r(uid, &entry, buffer, size, &result);

    if (status == ERANGE && size < MAX_NSS_BUFFER) {
      size *= 2;
      continue;
    }
    if (result == NULL && (status == 0 || status == ENOENT || status == ESRCH ||
                           status == EBADF || status == EPERM)) {
      g_set_error(error, TG_ERROR, TG_ERROR_NOT_FOUND, "No user with uid %u", (guint)uid);
      return FALSE;
    }
    if (result == NULL) {
      g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "Cannot look up uid %u: %s",
                  (guint)uid, g_strerror(status));
      return FALSE;
    }
    *user = g_strdup(entry.pw_name);
    *gid = entry.pw_gid;
    return TRUE;
  }
}

static char *
lookup_group_name(gid_t gid)
{
  gsize size = initial_buffer_size(_SC_GETGR_R_SIZE_MAX);

  for (;;) {
    g_autofree char *buffer = g_malloc(size);
    struct group entry;
    struct group *result = NULL;
    int status = getgrgid_r(gid, &entry, buffer, size, &result);

    if (status == ERANGE && size < MAX_NSS_BUFFER) {
      size *= 2;
      continue;
    }
    return result != NULL ? g_strdup(entry.gr_name) : NULL;
  }
}

/* Primary group first, each name once. NULL when the list cannot be had:
 * a subject with groups missing could slip past a "Match Group !x" or an
 * "AllowGroups ...,!x", so it is an error, not fewer groups. */
static GPtrArray *
lookup_group_names(const char *user, gid_t primary, GError **error)
{
  GPtrArray *names;
  int count = INITIAL_GROUPS;
  g_autofree gid_t *gids = g_new(gid_t, count);

  if (getgrouplist(user, primary, gids, &count) < 0) {
    gids = g_renew(gid_t, gids, count);
    if (getgrouplist(user, primary, gids, &count) < 0) {
      g_set_error(error, TG_ERROR, TG_ERROR_FAILED, "Cannot list the groups of user %s",
                  user);
      return NULL;
    }
  }
  names = g_ptr_array_new_with_free_func(g_free);
  for (int i = -1; i < count; i++) {
    char *name = lookup_group_name(i < 0 ? primary : gids[i]);

    if (name != NULL && !g_ptr_array_find_with_equal_func(names, name, g_str_equal, NULL))
      g_ptr_array_add(names, name);
    else
      g_free(name);
  }
  g_ptr_array_add(names, NULL);
  return names;
}

TgPolicySubject *
tg_policy_subject_from_uid(uid_t uid, GError **error)
{
  g_autofree char *user = NULL;
  g_autoptr(GPtrArray) groups = NULL;
  gid_t gid;

  if (!lookup_user(uid, &user, &gid, error))
    return NULL;
  groups = lookup_group_names(user, gid, error);
  if (groups == NULL)
    return NULL;
  return tg_policy_subject_new(user, uid, (const char *const *)groups->pdata);
}

TgPolicySubject *
tg_policy_subject_new(const char *user, uid_t uid, const char *const *groups)
{
  TgPolicySubject *subject = g_new0(TgPolicySubject, 1);
  const char *const no_groups[] = { NULL };

  g_return_val_if_fail(user != NULL, NULL);

  subject->user = g_strdup(user);
  subject->uid = uid;
  subject->groups = g_strdupv((char **)(groups != NULL ? groups : no_groups));
  return subject;
}

TgPolicySubject *
tg_policy_subject_copy(const TgPolicySubject *subject)
{
  if (subject == NULL)
    return NULL;
  return tg_policy_subject_new(subject->user, subject->uid,
                               (const char *const *)subject->groups);
}

void
tg_policy_subject_free(TgPolicySubject *subject)
{
  if (subject == NULL)
    return;
  g_free(subject->user);
  g_strfreev(subject->groups);
  g_free(subject);
}
