// Minimal logging and invariant checks (Debian's Abseil predates absl/log).
//
// TANDEM_CHECK(cond) << "context";   aborts with file:line when an invariant is broken.
// TANDEM_LOG(INFO) << "message";     one line to stderr: time, level, file:line, message.
// Use absl::Status for anything the outside world can cause; CHECK only for our own bugs.
#pragma once

#include <sstream>
#include <string_view>

namespace tandem::internal {

enum class LogLevel { kInfo, kWarning, kError, kFatal };

// Collects one message and writes it as a single line when destroyed.
class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

// Lets `cond ? (void)0 : Voidify() & stream` type-check.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace tandem::internal

#define TANDEM_LOG_LEVEL_INFO ::tandem::internal::LogLevel::kInfo
#define TANDEM_LOG_LEVEL_WARNING ::tandem::internal::LogLevel::kWarning
#define TANDEM_LOG_LEVEL_ERROR ::tandem::internal::LogLevel::kError
#define TANDEM_LOG_LEVEL_FATAL ::tandem::internal::LogLevel::kFatal

#define TANDEM_LOG(level) \
  ::tandem::internal::LogMessage(TANDEM_LOG_LEVEL_##level, __FILE__, __LINE__).stream()

#define TANDEM_CHECK(cond)                                                          \
  (cond) ? (void)0                                                                  \
         : ::tandem::internal::Voidify() &                                          \
               ::tandem::internal::LogMessage(::tandem::internal::LogLevel::kFatal, \
                                              __FILE__, __LINE__)                   \
                       .stream()                                                    \
                   << "Check failed: " #cond " "
