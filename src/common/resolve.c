/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "resolve.h"

#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

gboolean
tg_resolve_networks(const char *name, GArray *networks)
{
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
  struct addrinfo *result = NULL;

  if (getaddrinfo(name, NULL, &hints, &result) != 0)
    return FALSE;
  for (struct addrinfo *a = result; a != NULL; a = a->ai_next) {
    TgNetwork address = { 0 };

    if (a->ai_family == AF_INET) {
      address.family = AF_INET;
      address.prefix = 32;
      memcpy(address.bytes, &((struct sockaddr_in *)a->ai_addr)->sin_addr, 4);
    } else if (a->ai_family == AF_INET6) {
      address.family = AF_INET6;
      address.prefix = 128;
      memcpy(address.bytes, &((struct sockaddr_in6 *)a->ai_addr)->sin6_addr, 16);
    } else {
      continue;
    }
    g_array_append_val(networks, address);
  }
  freeaddrinfo(result);
  return TRUE;
}
