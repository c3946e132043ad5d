/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "forward-spec.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "text.h"
#include "tg-error.h"

/* Longest forward or destination string we look at. Real ones are far
 * shorter; the limit keeps error messages and canonical specs bounded. */
#define MAX_SPEC_LENGTH 1024
/* Over-long input is quoted in messages only up to here. */
#define MAX_QUOTED_PREFIX 64
#define MAX_HOST_LENGTH 255
/* What fits in sockaddr_un.sun_path with its terminating NUL. */
#define MAX_SOCKET_PATH_LENGTH (sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1)
/* OpenSSH reads at most four fields: bind_address:port:host:hostport. */
#define MAX_FIELDS 4
#define MAX_USER_LENGTH 32
#define MAX_PROFILE_LENGTH 64
#define DEFAULT_SSH_PORT 22

/* ---- Messages ---------------------------------------------------------- */

/* Sets "<what> '<text>': <detail>". Every message quotes the whole input so
 * the caller sees which of several forwards was refused. */
static void set_input_error(GError **error, const char *what, const char *text,
                            const char *detail_format, ...) G_GNUC_PRINTF(4, 5);

static void
set_input_error(GError **error, const char *what, const char *text,
                const char *detail_format, ...)
{
  g_autofree char *quoted = tg_text_printable(text, MAX_SPEC_LENGTH);
  g_autofree char *detail = NULL;
  va_list args;

  va_start(args, detail_format);
  detail = g_strdup_vprintf(detail_format, args);
  va_end(args);
  g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "%s '%s': %s", what, quoted,
              detail);
}

/* Length, encoding and control characters: checked before any parsing so
 * that every later message can quote parts of @text verbatim. */
static gboolean
check_input_text(const char *what, const char *text, GError **error)
{
  gsize length = strnlen(text, MAX_SPEC_LENGTH + 1);
  const char *control;
  gunichar c;

  if (length == 0) {
    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT, "%s '': empty", what);
    return FALSE;
  }
  if (length > MAX_SPEC_LENGTH) {
    g_autofree char *prefix = tg_text_printable(text, MAX_QUOTED_PREFIX);

    g_set_error(error, TG_ERROR, TG_ERROR_INVALID_ARGUMENT,
                "%s '%s': longer than %d bytes", what, prefix, MAX_SPEC_LENGTH);
    return FALSE;
  }
  if (!g_utf8_validate(text, -1, NULL)) {
    set_input_error(error, what, text, "not valid UTF-8");
    return FALSE;
  }
  control = tg_text_find_control(text, -1, NULL, &c);
  if (control != NULL) {
    set_input_error(error, what, text, "control character U+%04X at byte %" G_GSIZE_FORMAT,
                    c, (gsize)(control - text));
    return FALSE;
  }
  return TRUE;
}

/* ---- Hosts and ports (shared by forwards and destinations) ------------- */

static gboolean
is_ipv4_literal(const char *text)
{
  struct in_addr address;

  return inet_pton(AF_INET, text, &address) == 1;
}

static gboolean
is_ipv6_literal(const char *text)
{
  struct in6_addr address;

  return inet_pton(AF_INET6, text, &address) == 1;
}

/* Host names, user names and profile names all use this set. */
static gboolean
is_name_char(char c)
{
  return g_ascii_isalnum(c) || c == '.' || c == '_' || c == '-';
}

const char *
tg_forward_host_problem(const char *host)
{
  struct in_addr legacy_address;

  if (strlen(host) > MAX_HOST_LENGTH)
    return "longer than 255 bytes";
  if (strchr(host, ':') != NULL)
    return is_ipv6_literal(host) ? NULL : "not a valid IPv6 address";
  if (is_ipv4_literal(host))
    return NULL;
  if (host[0] == '-' || host[0] == '.')
    return "must not start with '-' or '.'";
  for (const char *p = host; *p != '\0'; p++) {
    if (!is_name_char(*p))
      return "only letters, digits, '.', '_' and '-' are allowed";
  }
  /* The resolver reads "127.1", "2130706433" or "0x7f.0.0.1" as addresses
   * (inet_aton). A policy comparing names or dotted quads would not. */
  if (inet_aton(host, &legacy_address) != 0)
    return "ambiguous numeric address (write IPv4 addresses as a.b.c.d)";
  return NULL;
}

/* ---- Forward fields ---------------------------------------------------- */

typedef struct {
  char *value;      /* brackets and escapes removed */
  gboolean is_path; /* held an unescaped '/': OpenSSH's Unix socket test */
} FwdField;

typedef struct {
  const char *spec; /* the whole input, for messages */
  TgForwardKind kind;
  FwdField fields[MAX_FIELDS];
  guint n_fields;
} FwdParse;

static void
fwd_parse_clear(FwdParse *parse)
{
  for (guint i = 0; i < parse->n_fields; i++)
    g_free(parse->fields[i].value);
  parse->n_fields = 0;
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(FwdParse, fwd_parse_clear)

/* "[...]" is taken literally, so IPv6 addresses keep their colons; the ']'
 * must end the field. Leaves *cursor on the ':' or NUL after the field. */
static gboolean
read_bracketed_field(FwdParse *parse, const char **cursor, FwdField *field,
                     GError **error)
{
  const char *open = *cursor;
  const char *close = strchr(open + 1, ']');

  if (close == NULL) {
    set_input_error(error, "forward", parse->spec, "unterminated '[' in '%s'", open);
    return FALSE;
  }
  if (close[1] != ':' && close[1] != '\0') {
    /* Quote the whole field: from '[' to the next ':'. */
    gsize field_length = (gsize)(close - open) + strcspn(close, ":");

    set_input_error(error, "forward", parse->spec, "unexpected text after ']' in '%.*s'",
                    (int)field_length, open);
    return FALSE;
  }
  field->value = g_strndup(open + 1, close - open - 1);
  field->is_path = strchr(field->value, '/') != NULL;
  *cursor = close + 1;
  return TRUE;
}

/* A backslash takes the next character literally; as in OpenSSH an escaped
 * '/' does not make the field a path. */
static gboolean
read_plain_field(FwdParse *parse, const char **cursor, FwdField *field, GError **error)
{
  GString *value = g_string_new(NULL);
  const char *p = *cursor;

  field->is_path = FALSE;
  for (; *p != '\0' && *p != ':'; p++) {
    if (*p == '\\') {
      p++;
      if (*p == '\0') {
        g_string_free(value, TRUE);
        set_input_error(error, "forward", parse->spec, "'\\' at the end escapes nothing");
        return FALSE;
      }
    } else if (*p == '/') {
      field->is_path = TRUE;
    }
    g_string_append_c(value, *p);
  }
  field->value = g_string_free(value, FALSE);
  *cursor = p;
  return TRUE;
}

/* Splits the text after "X " into ':'-separated fields. */
static gboolean
split_fields(FwdParse *parse, const char *argument, GError **error)
{
  const char *cursor = argument;

  for (;;) {
    FwdField *field;
    gboolean ok;

    if (parse->n_fields == MAX_FIELDS) {
      set_input_error(error, "forward", parse->spec,
                      "too many fields (at most %d); extra text '%s'", MAX_FIELDS,
                      cursor);
      return FALSE;
    }
    field = &parse->fields[parse->n_fields];
    ok = *cursor == '[' ? read_bracketed_field(parse, &cursor, field, error)
                        : read_plain_field(parse, &cursor, field, error);
    if (!ok)
      return FALSE;
    parse->n_fields++;
    if (*cursor == '\0')
      return TRUE;
    cursor++; /* the ':' */
    /* OpenSSH silently drops a final ':'; refusing it keeps one spelling. */
    if (*cursor == '\0') {
      set_input_error(error, "forward", parse->spec, "trailing ':'");
      return FALSE;
    }
  }
}

/* ---- Forward field roles ----------------------------------------------- */

typedef enum {
  ROLE_BIND_ADDRESS,
  ROLE_LISTEN_PORT,
  ROLE_LISTEN_PATH,
  ROLE_CONNECT_HOST,
  ROLE_CONNECT_PORT,
  ROLE_CONNECT_PATH,
} FieldRole;

static const char *
role_name(FieldRole role)
{
  switch (role) {
  case ROLE_BIND_ADDRESS:
    return "bind address";
  case ROLE_LISTEN_PORT:
    return "listen port";
  case ROLE_CONNECT_HOST:
    return "host";
  case ROLE_CONNECT_PORT:
    return "connect port";
  case ROLE_LISTEN_PATH:
  case ROLE_CONNECT_PATH:
    break;
  }
  return "socket path";
}

static gboolean
role_is_path(FieldRole role)
{
  return role == ROLE_LISTEN_PATH || role == ROLE_CONNECT_PATH;
}

static const char *const forms_local =
    "[bind_address:]port:host:hostport, [bind_address:]port:remote_socket, "
    "local_socket:host:hostport or local_socket:remote_socket";
static const char *const forms_remote =
    "[bind_address:]port:host:hostport, [bind_address:]port:local_socket, "
    "remote_socket:host:hostport, remote_socket:local_socket or "
    "[bind_address:]port";
static const char *const forms_dynamic = "port or bind_address:port";

static const char *
forms_for_kind(TgForwardKind kind)
{
  switch (kind) {
  case TG_FORWARD_LOCAL:
    return forms_local;
  case TG_FORWARD_REMOTE:
    return forms_remote;
  case TG_FORWARD_DYNAMIC:
    break;
  }
  return forms_dynamic;
}

/* D: port or bind_address:port, never a Unix socket. */
static gboolean
assign_dynamic_roles(const FwdParse *parse, FieldRole *roles, GError **error)
{
  for (guint i = 0; i < parse->n_fields; i++) {
    if (parse->fields[i].is_path) {
      set_input_error(error, "forward", parse->spec,
                      "dynamic forwards cannot use a Unix socket ('%s')",
                      parse->fields[i].value);
      return FALSE;
    }
  }
  if (parse->n_fields > 2) {
    set_input_error(error, "forward", parse->spec, "too many fields (expected %s)",
                    forms_dynamic);
    return FALSE;
  }
  if (parse->n_fields == 2)
    *roles++ = ROLE_BIND_ADDRESS;
  *roles = ROLE_LISTEN_PORT;
  return TRUE;
}

static const FieldRole roles_port_host_port[] = { ROLE_LISTEN_PORT, ROLE_CONNECT_HOST,
                                                  ROLE_CONNECT_PORT };
static const FieldRole roles_bind_port_host_port[] = {
  ROLE_BIND_ADDRESS, ROLE_LISTEN_PORT, ROLE_CONNECT_HOST, ROLE_CONNECT_PORT
};
static const FieldRole roles_path_host_port[] = { ROLE_LISTEN_PATH, ROLE_CONNECT_HOST,
                                                  ROLE_CONNECT_PORT };
static const FieldRole roles_bind_port_path[] = { ROLE_BIND_ADDRESS, ROLE_LISTEN_PORT,
                                                  ROLE_CONNECT_PATH };
static const FieldRole roles_port_path[] = { ROLE_LISTEN_PORT, ROLE_CONNECT_PATH };
static const FieldRole roles_path_path[] = { ROLE_LISTEN_PATH, ROLE_CONNECT_PATH };
static const FieldRole roles_bind_port[] = { ROLE_BIND_ADDRESS, ROLE_LISTEN_PORT };
static const FieldRole roles_port[] = { ROLE_LISTEN_PORT };

/* L and R: which field is what, decided like OpenSSH's parse_forward(): by
 * the number of fields and which of them are paths. NULL when no form fits;
 * a field that fits its position but not its role (a path where a host
 * belongs) is reported by apply_field(). */
static const FieldRole *
tcp_or_socket_roles(const FwdParse *parse, gboolean *remote_dynamic)
{
  const FwdField *f = parse->fields;
  gboolean remote = parse->kind == TG_FORWARD_REMOTE;

  *remote_dynamic = FALSE;
  switch (parse->n_fields) {
  case 4:
    return roles_bind_port_host_port;
  case 3:
    if (f[0].is_path)
      return roles_path_host_port;
    return f[2].is_path ? roles_bind_port_path : roles_port_host_port;
  case 2:
    if (f[1].is_path)
      return f[0].is_path ? roles_path_path : roles_port_path;
    /* ssh -R [bind_address:]port: SOCKS on the server, never on a socket. */
    *remote_dynamic = remote && !f[0].is_path;
    return *remote_dynamic ? roles_bind_port : NULL;
  case 1:
    *remote_dynamic = remote && !f[0].is_path;
    return *remote_dynamic ? roles_port : NULL;
  default:
    return NULL;
  }
}

static gboolean
assign_roles(const FwdParse *parse, FieldRole *roles, gboolean *remote_dynamic,
             GError **error)
{
  const FieldRole *chosen;

  if (parse->kind == TG_FORWARD_DYNAMIC)
    return assign_dynamic_roles(parse, roles, error);
  chosen = tcp_or_socket_roles(parse, remote_dynamic);
  if (chosen == NULL) {
    set_input_error(error, "forward", parse->spec, "missing fields (expected %s)",
                    forms_for_kind(parse->kind));
    return FALSE;
  }
  memcpy(roles, chosen, parse->n_fields * sizeof *roles);
  return TRUE;
}

/* ---- Forward field checks ---------------------------------------------- */

static gboolean
check_port_field(const FwdParse *parse, FieldRole role, const char *text, guint16 *port,
                 GError **error)
{
  if (*text == '\0') {
    set_input_error(error, "forward", parse->spec, "empty %s", role_name(role));
    return FALSE;
  }
  if (!tg_text_parse_port(text, port)) {
    set_input_error(error, "forward", parse->spec,
                    "%s '%s' is not a number from 0 to 65535", role_name(role), text);
    return FALSE;
  }
  /* Listening on port 0 lets the kernel or the server pick one; connecting
   * to port 0 is meaningless. */
  if (role == ROLE_CONNECT_PORT && *port == 0) {
    set_input_error(error, "forward", parse->spec, "connect port 0 is not allowed");
    return FALSE;
  }
  return TRUE;
}

/* "" and "*" both mean every address to OpenSSH. */
static gboolean
check_host_field(const FwdParse *parse, FieldRole role, const char *text, GError **error)
{
  const char *problem;
  guint16 unused_port;

  if (role == ROLE_BIND_ADDRESS && (*text == '\0' || g_str_equal(text, "*")))
    return TRUE;
  /* "R 8080:80" reads as bind_address:port; say what was probably meant. */
  if (role == ROLE_BIND_ADDRESS && tg_text_parse_port(text, &unused_port)) {
    set_input_error(error, "forward", parse->spec,
                    "bind address '%s' looks like a port (expected %s)", text,
                    forms_for_kind(parse->kind));
    return FALSE;
  }
  if (*text == '\0') {
    set_input_error(error, "forward", parse->spec, "empty host");
    return FALSE;
  }
  problem = tg_forward_host_problem(text);
  if (problem != NULL) {
    set_input_error(error, "forward", parse->spec, "invalid %s '%s': %s", role_name(role),
                    text, problem);
    return FALSE;
  }
  return TRUE;
}

static gboolean
check_path_field(const FwdParse *parse, const char *text, GError **error)
{
  if (strlen(text) > MAX_SOCKET_PATH_LENGTH) {
    set_input_error(error, "forward", parse->spec,
                    "socket path '%s' is longer than %" G_GSIZE_FORMAT " bytes", text,
                    (gsize)MAX_SOCKET_PATH_LENGTH);
    return FALSE;
  }
  return TRUE;
}

/* Validates one field for its role and stores it in @forward. */
static gboolean
apply_field(const FwdParse *parse, const FwdField *field, FieldRole role,
            TgForward *forward, GError **error)
{
  gboolean listening =
      role == ROLE_BIND_ADDRESS || role == ROLE_LISTEN_PORT || role == ROLE_LISTEN_PATH;
  TgEndpoint *end = listening ? &forward->listen : &forward->connect;

  if (field->is_path && !role_is_path(role)) {
    set_input_error(error, "forward", parse->spec,
                    "'%s' is a Unix socket path where a %s was expected", field->value,
                    role_name(role));
    return FALSE;
  }
  switch (role) {
  case ROLE_LISTEN_PORT:
  case ROLE_CONNECT_PORT:
    return check_port_field(parse, role, field->value, &end->port, error);
  case ROLE_BIND_ADDRESS:
  case ROLE_CONNECT_HOST:
    if (!check_host_field(parse, role, field->value, error))
      return FALSE;
    end->host = g_strdup(field->value);
    return TRUE;
  case ROLE_LISTEN_PATH:
  case ROLE_CONNECT_PATH:
    if (!check_path_field(parse, field->value, error))
      return FALSE;
    end->path = g_strdup(field->value);
    return TRUE;
  }
  g_return_val_if_reached(FALSE);
}

/* ---- Canonical form ---------------------------------------------------- */

/* Hosts are validated, so only IPv6 addresses need quoting: brackets. */
static void
append_host_field(GString *out, const char *host)
{
  if (strchr(host, ':') != NULL)
    g_string_append_printf(out, "[%s]", host);
  else
    g_string_append(out, host);
}

/* Paths may hold anything but control characters. Brackets keep the '/'
 * that marks a path visible to the parser; backslashes only when the path
 * itself contains ']'. */
static void
append_path_field(GString *out, const char *path)
{
  if (path[0] != '[' && strpbrk(path, ":\\") == NULL) {
    g_string_append(out, path);
  } else if (strchr(path, ']') == NULL) {
    g_string_append_printf(out, "[%s]", path);
  } else {
    for (const char *p = path; *p != '\0'; p++) {
      if (*p == ':' || *p == '\\' || (*p == '[' && p == path))
        g_string_append_c(out, '\\');
      g_string_append_c(out, *p);
    }
  }
}

static void
append_endpoint(GString *out, const TgEndpoint *end)
{
  if (end->path != NULL) {
    append_path_field(out, end->path);
    return;
  }
  if (end->host != NULL) {
    append_host_field(out, end->host);
    g_string_append_c(out, ':');
  }
  g_string_append_printf(out, "%u", (guint)end->port);
}

static char *
build_canonical_spec(const TgForward *forward)
{
  static const char kind_letters[] = {
    [TG_FORWARD_LOCAL] = 'L', [TG_FORWARD_REMOTE] = 'R', [TG_FORWARD_DYNAMIC] = 'D'
  };
  GString *out = g_string_new(NULL);

  g_string_append_c(out, kind_letters[forward->kind]);
  g_string_append_c(out, ' ');
  append_endpoint(out, &forward->listen);
  if (forward->kind != TG_FORWARD_DYNAMIC && !forward->remote_dynamic) {
    g_string_append_c(out, ':');
    append_endpoint(out, &forward->connect);
  }
  return g_string_free(out, FALSE);
}

/* ---- Forward: public API ----------------------------------------------- */

/* The kind letter and the single space after it. Sets *argument to the
 * text after the space. */
static gboolean
parse_kind(const char *spec, TgForwardKind *kind, const char **argument, GError **error)
{
  /* A second letter makes a word ("Local 80:h:80"): an unknown kind. A
   * digit or ':' there ("L80:h:80") is a missing space, reported below. */
  char letter = g_ascii_isalpha(spec[1]) ? '\0' : spec[0];

  switch (letter) {
  case 'L':
    *kind = TG_FORWARD_LOCAL;
    break;
  case 'R':
    *kind = TG_FORWARD_REMOTE;
    break;
  case 'D':
    *kind = TG_FORWARD_DYNAMIC;
    break;
  default:
    /* Quote the first word, or the leading space itself. */
    set_input_error(error, "forward", spec, "unknown kind '%.*s' (expected L, R or D)",
                    (int)MAX(strcspn(spec, " "), 1), spec);
    return FALSE;
  }
  if (spec[1] != ' ') {
    set_input_error(error, "forward", spec, "missing space after the kind letter");
    return FALSE;
  }
  if (spec[2] == ' ') {
    set_input_error(error, "forward", spec, "more than one space after the kind letter");
    return FALSE;
  }
  if (spec[2] == '\0') {
    set_input_error(error, "forward", spec, "nothing after '%c '", spec[0]);
    return FALSE;
  }
  *argument = spec + 2;
  return TRUE;
}

static gboolean
apply_fields(const FwdParse *parse, TgForward *forward, GError **error)
{
  FieldRole roles[MAX_FIELDS];

  if (!assign_roles(parse, roles, &forward->remote_dynamic, error))
    return FALSE;
  for (guint i = 0; i < parse->n_fields; i++) {
    if (!apply_field(parse, &parse->fields[i], roles[i], forward, error))
      return FALSE;
  }
  return TRUE;
}

TgForward *
tg_forward_parse(const char *spec, GError **error)
{
  g_auto(FwdParse) parse = { .spec = spec };
  g_autoptr(TgForward) forward = NULL;
  const char *argument = NULL;

  g_return_val_if_fail(spec != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  if (!check_input_text("forward", spec, error) ||
      !parse_kind(spec, &parse.kind, &argument, error))
    return NULL;
  /* OpenSSH expands ${VAR} from its environment; a daemon must not expand
   * its own, and taking it literally would mean something else than ssh. */
  if (strstr(argument, "${") != NULL) {
    set_input_error(error, "forward", spec,
                    "environment variables ('${') are not expanded");
    return NULL;
  }
  if (!split_fields(&parse, argument, error))
    return NULL;

  forward = g_new0(TgForward, 1);
  forward->kind = parse.kind;
  if (!apply_fields(&parse, forward, error))
    return NULL;
  forward->spec = build_canonical_spec(forward);
  return g_steal_pointer(&forward);
}

static void
endpoint_copy(TgEndpoint *to, const TgEndpoint *from)
{
  to->host = g_strdup(from->host);
  to->port = from->port;
  to->path = g_strdup(from->path);
}

static void
endpoint_clear(TgEndpoint *end)
{
  g_clear_pointer(&end->host, g_free);
  g_clear_pointer(&end->path, g_free);
}

TgForward *
tg_forward_copy(const TgForward *forward)
{
  TgForward *copy;

  g_return_val_if_fail(forward != NULL, NULL);

  copy = g_new0(TgForward, 1);
  copy->kind = forward->kind;
  endpoint_copy(&copy->listen, &forward->listen);
  endpoint_copy(&copy->connect, &forward->connect);
  copy->remote_dynamic = forward->remote_dynamic;
  copy->spec = g_strdup(forward->spec);
  return copy;
}

void
tg_forward_free(TgForward *forward)
{
  if (forward == NULL)
    return;
  endpoint_clear(&forward->listen);
  endpoint_clear(&forward->connect);
  g_free(forward->spec);
  g_free(forward);
}

static gboolean
host_is_loopback(const char *host)
{
  struct in_addr ipv4;
  struct in6_addr ipv6;

  /* No bind address: OpenSSH listens on loopback (GatewayPorts no). */
  if (host == NULL)
    return TRUE;
  if (g_ascii_strcasecmp(host, "localhost") == 0)
    return TRUE;
  if (inet_pton(AF_INET, host, &ipv4) == 1)
    return (ntohl(ipv4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &ipv6) == 1)
    return IN6_IS_ADDR_LOOPBACK(&ipv6);
  return FALSE;
}

gboolean
tg_forward_listens_on_loopback_only(const TgForward *forward)
{
  g_return_val_if_fail(forward != NULL, FALSE);

  /* R listens on the server, whose loopback is not ours. */
  if (forward->kind == TG_FORWARD_REMOTE)
    return FALSE;
  /* Socket paths have their own check (who may create them where). */
  if (forward->listen.path != NULL)
    return FALSE;
  return host_is_loopback(forward->listen.host);
}

/* ---- Destinations ------------------------------------------------------ */

/* The user name ssh(1) would send; no leading '-' so it can never read as
 * an option. */
static gboolean
is_valid_user(const char *user)
{
  gsize length = strlen(user);

  if (length == 0 || length > MAX_USER_LENGTH || user[0] == '-')
    return FALSE;
  for (const char *p = user; *p != '\0'; p++) {
    if (!is_name_char(*p))
      return FALSE;
  }
  return TRUE;
}

static gboolean
is_valid_profile_name(const char *name)
{
  gsize length = strlen(name);

  if (length == 0 || length > MAX_PROFILE_LENGTH || name[0] == '.' || name[0] == '-')
    return FALSE;
  for (const char *p = name; *p != '\0'; p++) {
    if (!is_name_char(*p))
      return FALSE;
  }
  return TRUE;
}

static gboolean
parse_destination_port(const char *text, const char *port_text, guint16 *port,
                       GError **error)
{
  if (*port_text == '\0') {
    set_input_error(error, "destination", text, "empty port after ':'");
    return FALSE;
  }
  if (!tg_text_parse_port(port_text, port) || *port == 0) {
    set_input_error(error, "destination", text, "invalid port '%s' (expected 1 to 65535)",
                    port_text);
    return FALSE;
  }
  return TRUE;
}

/* "[v6]" or "[v6]:port". */
static gboolean
parse_bracketed_host(const char *text, const char *host_port, TgDestination *destination,
                     GError **error)
{
  const char *close = strchr(host_port, ']');
  g_autofree char *address = NULL;

  if (close == NULL) {
    set_input_error(error, "destination", text, "unterminated '[' in '%s'", host_port);
    return FALSE;
  }
  address = g_strndup(host_port + 1, close - host_port - 1);
  if (!is_ipv6_literal(address)) {
    set_input_error(error, "destination", text, "invalid IPv6 address '%s' in brackets",
                    address);
    return FALSE;
  }
  if (close[1] != '\0' && close[1] != ':') {
    set_input_error(error, "destination", text, "unexpected text '%s' after ']'",
                    close + 1);
    return FALSE;
  }
  if (close[1] == ':' &&
      !parse_destination_port(text, close + 2, &destination->port, error))
    return FALSE;
  destination->host = g_steal_pointer(&address);
  return TRUE;
}

/* "host", "host:port", or a bare IPv6 address (two or more ':'), which
 * cannot carry a port. */
static gboolean
parse_host_port(const char *text, const char *host_port, TgDestination *destination,
                GError **error)
{
  const char *colon = strchr(host_port, ':');
  g_autofree char *host = NULL;
  const char *problem;

  if (host_port[0] == '[')
    return parse_bracketed_host(text, host_port, destination, error);
  if (colon != NULL && strchr(colon + 1, ':') == NULL) {
    host = g_strndup(host_port, colon - host_port);
    if (!parse_destination_port(text, colon + 1, &destination->port, error))
      return FALSE;
  } else {
    host = g_strdup(host_port);
  }
  if (*host == '\0') {
    set_input_error(error, "destination", text, "empty host");
    return FALSE;
  }
  problem = tg_forward_host_problem(host);
  if (problem != NULL) {
    set_input_error(error, "destination", text, "invalid host '%s': %s", host, problem);
    return FALSE;
  }
  destination->host = g_steal_pointer(&host);
  return TRUE;
}

static gboolean
parse_profile(const char *text, TgDestination *destination, GError **error)
{
  const char *name = text + 1;

  if (!is_valid_profile_name(name)) {
    set_input_error(error, "destination", text,
                    "invalid profile name '%s' (1 to %d of A-Z a-z 0-9 . _ -, "
                    "not starting with '.' or '-')",
                    name, MAX_PROFILE_LENGTH);
    return FALSE;
  }
  destination->profile = g_strdup(name);
  return TRUE;
}

TgDestination *
tg_destination_parse(const char *text, GError **error)
{
  g_autoptr(TgDestination) destination = NULL;
  const char *at;
  const char *host_port = text;

  g_return_val_if_fail(text != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  if (!check_input_text("destination", text, error))
    return NULL;
  destination = g_new0(TgDestination, 1);
  destination->port = DEFAULT_SSH_PORT;
  if (text[0] == '@')
    return parse_profile(text, destination, error) ? g_steal_pointer(&destination) : NULL;

  /* Like ssh(1), the last '@' separates the user from the host. */
  at = strrchr(text, '@');
  if (at != NULL) {
    g_autofree char *user = g_strndup(text, at - text);

    if (!is_valid_user(user)) {
      set_input_error(error, "destination", text,
                      "invalid user name '%s' (1 to %d of A-Z a-z 0-9 . _ -, "
                      "not starting with '-')",
                      user, MAX_USER_LENGTH);
      return NULL;
    }
    destination->user = g_steal_pointer(&user);
    host_port = at + 1;
  }
  if (!parse_host_port(text, host_port, destination, error))
    return NULL;
  return g_steal_pointer(&destination);
}

void
tg_destination_free(TgDestination *destination)
{
  if (destination == NULL)
    return;
  g_free(destination->user);
  g_free(destination->host);
  g_free(destination->profile);
  g_free(destination);
}
