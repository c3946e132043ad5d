/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "worker.h"

typedef struct {
  GThread *thread;
  GTask *task;
  GTaskThreadFunc func;
  gint finished; /* atomic: the function has returned */
} Worker;

static GMutex lock;
static GPtrArray *workers; /* Worker*, under lock */

static gpointer
worker_main(gpointer data)
{
  Worker *worker = data;
  GTask *task = worker->task;

  worker->func(task, g_task_get_source_object(task), g_task_get_task_data(task),
               g_task_get_cancellable(task));
  g_object_unref(task);
  g_atomic_int_set(&worker->finished, 1);
  return NULL;
}

/* Joins the workers that are done (or all of them). */
static void
reap(gboolean all)
{
  for (;;) {
    Worker *worker = NULL;

    g_mutex_lock(&lock);
    for (guint i = 0; workers != NULL && i < workers->len; i++) {
      Worker *candidate = g_ptr_array_index(workers, i);

      if (all || g_atomic_int_get(&candidate->finished)) {
        worker = g_ptr_array_steal_index_fast(workers, i);
        break;
      }
    }
    g_mutex_unlock(&lock);
    if (worker == NULL)
      return;
    g_thread_join(worker->thread);
    g_free(worker);
  }
}

void
tg_worker_run(GTask *task, GTaskThreadFunc func)
{
  Worker *worker = g_new0(Worker, 1);
  GError *error = NULL;

  reap(FALSE);
  worker->task = g_object_ref(task);
  worker->func = func;
  g_mutex_lock(&lock); /* in the list before the thread can finish */
  worker->thread = g_thread_try_new("tg-worker", worker_main, worker, &error);
  if (worker->thread == NULL) {
    g_mutex_unlock(&lock);
    g_object_unref(worker->task);
    g_free(worker);
    g_task_return_new_error(task, G_IO_ERROR, G_IO_ERROR_FAILED,
                            "cannot start a thread: %s", error->message);
    g_error_free(error);
    return;
  }
  if (workers == NULL)
    workers = g_ptr_array_new();
  g_ptr_array_add(workers, worker);
  g_mutex_unlock(&lock);
}

void
tg_worker_join_all(void)
{
  reap(TRUE);
  g_mutex_lock(&lock);
  g_clear_pointer(&workers, g_ptr_array_unref);
  g_mutex_unlock(&lock);
}
