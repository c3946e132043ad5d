/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The reconnect backoff (tg_session_retry_delay()): equal jitter within
 * [d/2, d], d doubling from 1 s to the 60 s cap, spread out (tunnels of one
 * server that lost it together do not come back in step). */
#include "session.h"

static void
test_bounds(void)
{
  for (guint attempt = 1; attempt <= 40; attempt++) {
    gint64 d = MIN((gint64)1 << MIN(attempt - 1, 16), TG_SESSION_RETRY_MAX_SECONDS) *
               G_USEC_PER_SEC;

    for (int i = 0; i < 200; i++) {
      gint64 delay = tg_session_retry_delay(attempt);

      g_assert_cmpint(delay, >=, d / 2);
      g_assert_cmpint(delay, <=, d);
    }
  }
  /* the first attempt comes quickly, no attempt waits more than a minute */
  g_assert_cmpint(tg_session_retry_delay(1), <=, G_USEC_PER_SEC);
  g_assert_cmpint(tg_session_retry_delay(G_MAXUINT), <=, 60 * G_USEC_PER_SEC);
  g_assert_cmpint(tg_session_retry_delay(G_MAXUINT), >=, 30 * G_USEC_PER_SEC);
}

static void
test_spread(void)
{
  /* 1000 tunnels at their 6th attempt (d = 32 s): spread over [16, 32] s,
   * each fifth of the range used */
  guint buckets[5] = { 0 };

  for (int i = 0; i < 1000; i++) {
    gint64 delay = tg_session_retry_delay(6) - 16 * G_USEC_PER_SEC;
    guint bucket = (guint)MIN(4, delay * 5 / (16 * G_USEC_PER_SEC + 1));

    buckets[bucket]++;
  }
  for (guint i = 0; i < G_N_ELEMENTS(buckets); i++) {
    g_test_message("bucket %u: %u", i, buckets[i]);
    g_assert_cmpuint(buckets[i], >, 100);
  }
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/backoff/bounds", test_bounds);
  g_test_add_func("/backoff/spread", test_spread);
  return g_test_run();
}
