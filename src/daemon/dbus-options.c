/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "dbus-options.h"

#include <gio/gunixfdlist.h>
#include <unistd.h>

#include "tg-error.h"

gboolean
tg_option_has_type(const char *key, GVariant *value, const char *type, GError **error)
{
  if (g_variant_is_of_type(value, G_VARIANT_TYPE(type)))
    return TRUE;
  g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
              "Option '%s' must be of type '%s', not '%s'", key, type,
              g_variant_get_type_string(value));
  return FALSE;
}

int
tg_option_take_fd(GDBusMethodInvocation *invocation, const char *key, GVariant *value,
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

gboolean
tg_option_is_credential(const char *key)
{
  return g_str_equal(key, "agent") || g_str_equal(key, "identity") ||
         g_str_equal(key, "agent-fd") || g_str_equal(key, "identity-fd");
}

gboolean
tg_option_parse_credential(GDBusMethodInvocation *invocation, const char *key,
                           GVariant *value, char **agent_path, int *agent_fd,
                           char **identity_path, int *identity_fd, GError **error)
{
  gboolean agent = key[0] == 'a';

  if (g_str_equal(key, "agent") || g_str_equal(key, "identity")) {
    char **target = agent ? agent_path : identity_path;

    if (!tg_option_has_type(key, value, "s", error))
      return FALSE;
    g_free(*target);
    *target = g_variant_dup_string(value, NULL);
    if ((*target)[0] != '/') {
      g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                  "Option '%s' must be an absolute path, not '%s'", key, *target);
      return FALSE;
    }
    return TRUE;
  }
  {
    int *target = agent ? agent_fd : identity_fd;

    if (!tg_option_has_type(key, value, "h", error))
      return FALSE;
    if (*target >= 0)
      close(*target);
    *target = tg_option_take_fd(invocation, key, value, error);
    return *target >= 0;
  }
}
