/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: arbitrary bytes as a policy file (and as a profile, which
 * shares the tokenizer). A policy that parses must answer a few decisions
 * and dump itself; the dump must parse again and mean the same. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "policy.h"
#include "profile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const forwards[] = {
  "L 8080:db.corp:5432",
  "L *:8080:10.1.2.3:22",
  "L 8080:/run/s.sock",
  "R 0:localhost:80",
  "R *:9000:[::1]:80",
  "R 1080",
  "D 1080",
  "L /tmp/a.sock:[2001:db8::1]:443",
};

static void
check_decisions(const TgPolicy *policy, const TgPolicySubject *subject)
{
  for (size_t i = 0; i < G_N_ELEMENTS(forwards); i++) {
    g_autoptr(TgForward) forward = tg_forward_parse(forwards[i], NULL);
    g_autoptr(TgPolicyDecision) decision =
        tg_policy_check_forward(policy, subject, forward);

    if (decision == NULL || decision->reason == NULL ||
        !g_utf8_validate(decision->reason, -1, NULL))
      abort();
  }
  tg_policy_decision_free(tg_policy_check_server(policy, subject, "gw.corp", 22));
  tg_policy_decision_free(
      tg_policy_check_socks_destination(policy, subject, "a.b.web.corp", 443));
  tg_policy_decision_free(tg_policy_check_socks_destination(policy, subject, "::1", 1));
  tg_policy_decision_free(
      tg_policy_check_count_limit(policy, subject, TG_POLICY_MAX_TUNNELS, 3));
}

/* The dump (without origins) is a policy with the same effective values. */
static void
check_dump_round_trip(const TgPolicy *policy, const TgPolicySubject *subject)
{
  g_autofree char *dump = tg_policy_dump_effective(policy, subject, FALSE);
  g_autoptr(GError) error = NULL;
  g_autoptr(TgPolicy) again = tg_policy_parse_string("dump", dump, -1, &error);
  g_autofree char *dump_again = NULL;

  if (again == NULL) {
    fprintf(stderr, "dump does not parse: %s\n%s", error->message, dump);
    abort();
  }
  dump_again = tg_policy_dump_effective(again, NULL, FALSE);
  if (g_strcmp0(dump, dump_again) != 0) {
    fprintf(stderr, "dump changed:\n%s---\n%s", dump, dump_again);
    abort();
  }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *text = (const char *)data;
  const char *groups[] = { "alice", "dba", "dev", NULL };
  g_autoptr(TgPolicySubject) subject = tg_policy_subject_new("alice", 1000, groups);
  g_autoptr(TgPolicy) policy = NULL;
  g_autoptr(TgProfile) profile = NULL;
  g_autoptr(GError) error = NULL;

  policy =
      tg_policy_parse_string("fuzz.conf", size > 0 ? text : "", (gssize)size, &error);
  if (policy == NULL) {
    if (error == NULL || !g_utf8_validate(error->message, -1, NULL))
      abort();
  } else {
    check_decisions(policy, subject);
    check_decisions(policy, NULL);
    check_dump_round_trip(policy, subject);
  }
  profile = tg_profile_parse_string("fuzz", "fuzz.conf", size > 0 ? text : "",
                                    (gssize)size, NULL);
  if (profile != NULL)
    (void)tg_profile_may_start(profile, subject);
  return 0;
}
