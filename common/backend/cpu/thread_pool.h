// A fixed pool of worker threads for data-parallel loops on the CPU backend.
//
// ParallelFor is called from one thread at a time (the engine thread); it splits [0, n)
// into contiguous chunks, runs them on the workers and the caller, and returns when all
// are done. Work items must not throw.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tandem {

class ThreadPool {
 public:
  // num_threads includes the calling thread; 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) over disjoint chunks covering [0, n).
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;  // guarded by mu_
  int64_t n_ = 0;                                               // guarded by mu_
  uint64_t generation_ = 0;                                     // guarded by mu_
  int pending_ = 0;                                             // guarded by mu_
  bool stopping_ = false;                                       // guarded by mu_
};

}  // namespace tandem
