/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libnss_tgtest.so.2: a directory the tests control, as sssd with
 * "enumerate = false" is. Users and groups come from TG_TEST_NSS_DIR/passwd
 * and /group (the files' format); they answer lookups by name and by id
 * and give group memberships (initgroups), but there is no getpwent or
 * getgrent: enumerating NSS never lists them. For the test world only
 * (tests/integration/world_users.py lists it in the namespaces'
 * nsswitch.conf); never installed. */
#include <errno.h>
#include <grp.h>
#include <nss.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#ifndef TG_TEST_NSS_DIR
#define TG_TEST_NSS_DIR "/run/tunnelgate-test-nss"
#endif

#define MAX_FIELDS 8
#define MAX_MEMBERS 64

enum nss_status _nss_tgtest_getpwnam_r(const char *name, struct passwd *result,
                                       char *buffer, size_t length, int *errnop);
enum nss_status _nss_tgtest_getpwuid_r(uid_t uid, struct passwd *result, char *buffer,
                                       size_t length, int *errnop);
enum nss_status _nss_tgtest_getgrnam_r(const char *name, struct group *result,
                                       char *buffer, size_t length, int *errnop);
enum nss_status _nss_tgtest_getgrgid_r(gid_t gid, struct group *result, char *buffer,
                                       size_t length, int *errnop);
enum nss_status _nss_tgtest_initgroups_dyn(const char *user, gid_t group, long int *start,
                                           long int *size, gid_t **groupsp,
                                           long int limit, int *errnop);

/* Splits @line (modified) at ':' into at most MAX_FIELDS fields. */
static int
split(char *line, char **fields)
{
  int n = 0;

  line[strcspn(line, "\n")] = '\0';
  fields[n++] = line;
  for (char *p = line; *p != '\0' && n < MAX_FIELDS; p++) {
    if (*p == ':') {
      *p = '\0';
      fields[n++] = p + 1;
    }
  }
  return n;
}

/* Copies @text into the caller's buffer; NULL when it is full. */
static char *
keep(const char *text, char **buffer, size_t *left)
{
  size_t length = strlen(text) + 1;
  char *copy = *buffer;

  if (length > *left)
    return NULL;
  memcpy(copy, text, length);
  *buffer += length;
  *left -= length;
  return copy;
}

typedef int (*Matcher)(char **fields, const void *key);

static int
user_by_name(char **fields, const void *key)
{
  return strcmp(fields[0], key) == 0;
}

static int
user_by_id(char **fields, const void *key)
{
  return strtoul(fields[2], NULL, 10) == *(const unsigned long *)key;
}

static enum nss_status
find_user(Matcher match, const void *key, struct passwd *result, char *buffer,
          size_t length, int *errnop)
{
  FILE *file = fopen(TG_TEST_NSS_DIR "/passwd", "re");
  char line[1024];
  enum nss_status status = NSS_STATUS_NOTFOUND;

  if (file == NULL)
    return NSS_STATUS_NOTFOUND;
  while (fgets(line, sizeof line, file) != NULL) {
    char *fields[MAX_FIELDS];

    if (split(line, fields) != 7 || !match(fields, key))
      continue;
    result->pw_uid = (uid_t)strtoul(fields[2], NULL, 10);
    result->pw_gid = (gid_t)strtoul(fields[3], NULL, 10);
    if ((result->pw_name = keep(fields[0], &buffer, &length)) == NULL ||
        (result->pw_passwd = keep(fields[1], &buffer, &length)) == NULL ||
        (result->pw_gecos = keep(fields[4], &buffer, &length)) == NULL ||
        (result->pw_dir = keep(fields[5], &buffer, &length)) == NULL ||
        (result->pw_shell = keep(fields[6], &buffer, &length)) == NULL) {
      *errnop = ERANGE;
      status = NSS_STATUS_TRYAGAIN;
    } else {
      status = NSS_STATUS_SUCCESS;
    }
    break;
  }
  fclose(file);
  return status;
}

enum nss_status
_nss_tgtest_getpwnam_r(const char *name, struct passwd *result, char *buffer,
                       size_t length, int *errnop)
{
  return find_user(user_by_name, name, result, buffer, length, errnop);
}

enum nss_status
_nss_tgtest_getpwuid_r(uid_t uid, struct passwd *result, char *buffer, size_t length,
                       int *errnop)
{
  unsigned long key = uid;

  return find_user(user_by_id, &key, result, buffer, length, errnop);
}

static enum nss_status
find_group(Matcher match, const void *key, struct group *result, char *buffer,
           size_t length, int *errnop)
{
  FILE *file = fopen(TG_TEST_NSS_DIR "/group", "re");
  char line[4096];
  enum nss_status status = NSS_STATUS_NOTFOUND;

  if (file == NULL)
    return NSS_STATUS_NOTFOUND;
  while (fgets(line, sizeof line, file) != NULL) {
    char *fields[MAX_FIELDS];
    char *members[MAX_MEMBERS + 1];
    char *save = NULL;
    int n = 0;
    char **list;

    if (split(line, fields) != 4 || !match(fields, key))
      continue;
    for (char *member = strtok_r(fields[3], ",", &save); member != NULL && n < MAX_MEMBERS;
         member = strtok_r(NULL, ",", &save))
      members[n++] = member;
    members[n] = NULL;
    result->gr_gid = (gid_t)strtoul(fields[2], NULL, 10);
    /* the member array first, aligned */
    {
      size_t skip = (sizeof(char *) - (uintptr_t)buffer % sizeof(char *)) % sizeof(char *);
      size_t need = skip + (n + 1) * sizeof(char *);

      if (need > length) {
        *errnop = ERANGE;
        status = NSS_STATUS_TRYAGAIN;
        break;
      }
      list = (char **)(buffer + skip);
      buffer += need;
      length -= need;
    }
    status = NSS_STATUS_SUCCESS;
    if ((result->gr_name = keep(fields[0], &buffer, &length)) == NULL ||
        (result->gr_passwd = keep(fields[1], &buffer, &length)) == NULL)
      status = NSS_STATUS_TRYAGAIN;
    for (int i = 0; i < n && status == NSS_STATUS_SUCCESS; i++) {
      if ((list[i] = keep(members[i], &buffer, &length)) == NULL)
        status = NSS_STATUS_TRYAGAIN;
    }
    list[n] = NULL;
    result->gr_mem = list;
    if (status != NSS_STATUS_SUCCESS)
      *errnop = ERANGE;
    break;
  }
  fclose(file);
  return status;
}

static int
group_by_name(char **fields, const void *key)
{
  return strcmp(fields[0], key) == 0;
}

static int
group_by_id(char **fields, const void *key)
{
  return strtoul(fields[2], NULL, 10) == *(const unsigned long *)key;
}

enum nss_status
_nss_tgtest_getgrnam_r(const char *name, struct group *result, char *buffer,
                       size_t length, int *errnop)
{
  return find_group(group_by_name, name, result, buffer, length, errnop);
}

enum nss_status
_nss_tgtest_getgrgid_r(gid_t gid, struct group *result, char *buffer, size_t length,
                       int *errnop)
{
  unsigned long key = gid;

  return find_group(group_by_id, &key, result, buffer, length, errnop);
}

enum nss_status
_nss_tgtest_initgroups_dyn(const char *user, gid_t group, long int *start, long int *size,
                           gid_t **groupsp, long int limit, int *errnop)
{
  FILE *file = fopen(TG_TEST_NSS_DIR "/group", "re");
  char line[4096];

  if (file == NULL)
    return NSS_STATUS_NOTFOUND;
  while (fgets(line, sizeof line, file) != NULL) {
    char *fields[MAX_FIELDS];
    gid_t gid;
    int member = 0;
    char *save = NULL;

    if (split(line, fields) != 4)
      continue;
    gid = (gid_t)strtoul(fields[2], NULL, 10);
    for (char *name = strtok_r(fields[3], ",", &save); name != NULL;
         name = strtok_r(NULL, ",", &save))
      member |= strcmp(name, user) == 0;
    if (!member || gid == group)
      continue;
    if (*start == *size) {
      long int grown = *size * 2;
      gid_t *groups;

      if (limit > 0 && grown > limit)
        grown = limit;
      if (grown <= *size)
        break;
      groups = realloc(*groupsp, grown * sizeof(gid_t));
      if (groups == NULL) {
        *errnop = ENOMEM;
        fclose(file);
        return NSS_STATUS_TRYAGAIN;
      }
      *groupsp = groups;
      *size = grown;
    }
    (*groupsp)[(*start)++] = gid;
  }
  fclose(file);
  return NSS_STATUS_SUCCESS;
}
