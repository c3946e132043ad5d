/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Worker threads (src/common/worker.c) and the account walk
 * (src/common/accounts.c). */
#include <unistd.h>

#include "accounts.h"
#include "worker.h"

typedef struct {
  guint answered;
  GThread *main_thread;
  gboolean in_main_thread;
} Results;

static void
work(GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
  /* not the thread that asked */
  g_task_return_pointer(task, g_thread_self(), NULL);
}

static void
done(GObject *source, GAsyncResult *result, gpointer user_data)
{
  Results *results = user_data;
  g_autoptr(GError) error = NULL;
  GThread *worker = g_task_propagate_pointer(G_TASK(result), &error);

  g_assert_no_error(error);
  g_assert_true(worker != results->main_thread);
  results->in_main_thread &= g_thread_self() == results->main_thread;
  results->answered++;
}

static guint
thread_count(void)
{
  g_autoptr(GDir) dir = g_dir_open("/proc/self/task", 0, NULL);
  guint n = 0;

  while (dir != NULL && g_dir_read_name(dir) != NULL)
    n++;
  return n;
}

static void
test_workers_answer_in_the_callers_context_and_end(void)
{
  Results results = { .main_thread = g_thread_self(), .in_main_thread = TRUE };
  guint before;

  /* GLib starts helper threads of its own on first use: one round first */
  {
    g_autoptr(GTask) task = g_task_new(NULL, NULL, done, &results);
    tg_worker_run(task, work);
  }
  while (results.answered < 1)
    g_main_context_iteration(NULL, TRUE);
  tg_worker_join_all();
  before = thread_count();
  for (guint i = 1; i < 20; i++) {
    g_autoptr(GTask) task = g_task_new(NULL, NULL, done, &results);
    tg_worker_run(task, work);
  }
  while (results.answered < 20)
    g_main_context_iteration(NULL, TRUE);
  g_assert_true(results.in_main_thread);
  tg_worker_join_all();
  /* every worker thread has ended: none is left behind */
  g_assert_cmpuint(thread_count(), ==, before);
}

static void
test_accounts_include_root_once(void)
{
  g_autoptr(GPtrArray) accounts = tg_accounts_list();
  g_autoptr(GHashTable) names = g_hash_table_new(g_str_hash, g_str_equal);
  gboolean root = FALSE;

  g_assert_cmpuint(accounts->len, >, 0);
  for (guint i = 0; i < accounts->len; i++) {
    const TgAccount *account = g_ptr_array_index(accounts, i);

    g_assert_false(g_hash_table_contains(names, account->name)); /* listed once */
    g_hash_table_add(names, account->name);
    root |= account->uid == 0 && g_str_equal(account->name, "root");
  }
  g_assert_true(root);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/worker/answer-in-callers-context-and-end",
                  test_workers_answer_in_the_callers_context_and_end);
  g_test_add_func("/accounts/root-once", test_accounts_include_root_once);
  return g_test_run();
}
