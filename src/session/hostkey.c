/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "hostkey.h"

#include <string.h>

#include "tg-error.h"

char *
tg_hostkey_fingerprint(ssh_session session, char **key_type, GError **error)
{
  ssh_key key = NULL;
  unsigned char *hash = NULL;
  size_t hash_length = 0;
  char *text;

  if (ssh_get_server_publickey(session, &key) != SSH_OK ||
      ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hash_length) != 0) {
    ssh_key_free(key);
    g_set_error(error, TG_ERROR, TG_ERROR_CONNECT_FAILED,
                "Could not read the server's host key: %s", ssh_get_error(session));
    return NULL;
  }
  if (key_type != NULL)
    *key_type = g_strdup(ssh_key_type_to_char(ssh_key_type(key)));
  ssh_key_free(key);

  /* libssh returns "SHA256:<base64 without padding>", as OpenSSH prints it */
  char *fingerprint =
      ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hash_length);
  ssh_clean_pubkey_hash(&hash);
  text = g_strdup(fingerprint);
  ssh_string_free_char(fingerprint);
  return text;
}

gboolean
tg_hostkey_fingerprint_is_valid(const char *text)
{
  const char *body;

  if (text == NULL || !g_str_has_prefix(text, "SHA256:"))
    return FALSE;
  body = text + strlen("SHA256:");
  if (strlen(body) != 43)
    return FALSE;
  for (const char *p = body; *p != '\0'; p++) {
    if (!g_ascii_isalnum(*p) && *p != '+' && *p != '/')
      return FALSE;
  }
  return TRUE;
}

gboolean
tg_hostkey_verify(ssh_session session, const char *host, const char *pinned,
                  TgHostKeyMode mode, GError **error)
{
  g_autofree char *key_type = NULL;
  g_autofree char *fingerprint = tg_hostkey_fingerprint(session, &key_type, error);
  enum ssh_known_hosts_e known;

  if (fingerprint == NULL)
    return FALSE;

  if (pinned != NULL && strcmp(pinned, fingerprint) != 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_HOST_KEY_CHANGED,
                "Host key of %s is %s %s, not the pinned %s; refusing to connect", host,
                key_type, fingerprint, pinned);
    return FALSE;
  }

  if (mode == TG_HOST_KEY_PINNED_ONLY && pinned != NULL)
    return TRUE; /* the policy trusts pins, and only pins: it matched */

  known = ssh_session_is_known_server(session);
  switch (known) {
  case SSH_KNOWN_HOSTS_OK:
    if (mode == TG_HOST_KEY_PINNED_ONLY) {
      g_set_error(error, TG_ERROR, TG_ERROR_HOST_KEY_UNKNOWN,
                  "Host key of %s (%s %s) is known, but HostKeyPolicy pinned-only "
                  "requires the host-key option",
                  host, key_type, fingerprint);
      return FALSE;
    }
    return TRUE;
  case SSH_KNOWN_HOSTS_CHANGED:
  case SSH_KNOWN_HOSTS_OTHER:
    g_set_error(error, TG_ERROR, TG_ERROR_HOST_KEY_CHANGED,
                "Host key of %s has changed: the server offered %s %s, which "
                "differs from the key in the known hosts files. Someone may be "
                "intercepting the connection; refusing to connect",
                host, key_type, fingerprint);
    return FALSE;
  case SSH_KNOWN_HOSTS_NOT_FOUND:
  case SSH_KNOWN_HOSTS_UNKNOWN:
    if (pinned != NULL && mode != TG_HOST_KEY_STRICT)
      return TRUE; /* the caller vouched for exactly this key */
    g_set_error(error, TG_ERROR, TG_ERROR_HOST_KEY_UNKNOWN,
                mode == TG_HOST_KEY_STRICT
                    ? "Host key of %s is unknown: the server offered %s %s, and "
                      "HostKeyPolicy strict accepts only keys in the known hosts files; "
                      "ask the administrator to add it"
                    : "Host key of %s is unknown: the server offered %s %s. Verify it "
                      "and pass it as the host-key option, or ask the administrator "
                      "to add it to the known hosts",
                host, key_type, fingerprint);
    return FALSE;
  case SSH_KNOWN_HOSTS_ERROR:
  default:
    g_set_error(error, TG_ERROR, TG_ERROR_FAILED,
                "Could not check the host key of %s: %s", host, ssh_get_error(session));
    return FALSE;
  }
}
