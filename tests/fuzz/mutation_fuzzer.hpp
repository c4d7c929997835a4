// A small, deterministic mutation fuzzer for the parsers every user input goes
// through (sizes, durations, profile YAML, cluster traces, memory traces, the
// daemon's request bodies). It plays libFuzzer's part without a clang build:
// seeds from tests/fuzz/corpus/<target>/, mutations (byte flips, inserts,
// deletions, splices, and tokens that broke parsers before: nan, inf, 2^64,
// negative numbers, empty fields), a fixed RNG seed and a fixed number of runs,
// so CI runs the same inputs every time. It runs in every preset, so under
// ASan+UBSan in the asan one.
//
// A target must accept an input or reject it with apt::vgpu::Error (the typed
// errors the CLI turns into one line and exit 2). Anything else fails: another
// exception (std::bad_alloc, std::out_of_range...), a sanitizer report, or an
// input that takes over 2 s (a watchdog prints it and aborts). The failing
// input is printed as a C string so it can become a regression test.
#pragma once

#include <apt/vgpu/common/error.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace apt::vgpu::fuzz {

struct FuzzResult {
  std::uint64_t runs = 0;
  std::uint64_t accepted = 0;
  std::uint64_t rejected = 0;  // typed errors
};

inline std::string printable(const std::string& input) {
  std::string out = "\"";
  for (unsigned char c : input) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buffer[8];
      std::snprintf(buffer, sizeof buffer, "\\x%02x", c);
      out += buffer;
    }
  }
  return out + "\"";
}

class MutationFuzzer {
 public:
  MutationFuzzer(std::string target, std::uint64_t seed) : target_(std::move(target)), rng_(seed) {
    const auto dir = std::filesystem::path(VGPU_SOURCE_DIR) / "tests" / "fuzz" / "corpus" / target_;
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) files.push_back(entry.path());
    std::sort(files.begin(), files.end());  // the order the RNG sees must not depend on the directory
    for (const auto& file : files) {
      std::ifstream in(file, std::ios::binary);
      std::ostringstream text;
      text << in.rdbuf();
      corpus_.push_back(text.str());
    }
  }

  [[nodiscard]] std::size_t corpus_size() const noexcept { return corpus_.size(); }

  // Runs `target` on every seed, then on `runs` mutants; stops at the first failure.
  FuzzResult run(const std::function<void(const std::string&)>& target, std::uint64_t runs) {
    FuzzResult result;
    Watchdog watchdog(target_);
    auto one = [&](const std::string& input) {
      watchdog.begin(input);
      try {
        target(input);
        ++result.accepted;
      } catch (const Error&) {
        ++result.rejected;
      } catch (const std::exception& e) {
        ADD_FAILURE() << target_ << ": untyped exception " << typeid(e).name() << " (" << e.what()
                      << ") for input " << printable(input);
        watchdog.end();
        return false;
      }
      watchdog.end();
      ++result.runs;
      return true;
    };
    for (const auto& seed : corpus_) {
      if (!one(seed)) return result;
    }
    for (std::uint64_t i = 0; i < runs; ++i) {
      if (!one(mutate())) return result;
    }
    return result;
  }

 private:
  // Aborts the process when one input runs for more than 2 s: a hang is a bug too.
  class Watchdog {
   public:
    explicit Watchdog(std::string target) : target_(std::move(target)), thread_([this] { watch(); }) {}
    ~Watchdog() {
      {
        std::lock_guard lock(mutex_);
        stop_ = true;
      }
      cv_.notify_all();
      thread_.join();
    }
    void begin(const std::string& input) {
      std::lock_guard lock(mutex_);
      input_ = input;
      started_ = std::chrono::steady_clock::now();
      busy_ = true;
      cv_.notify_all();
    }
    void end() {
      std::lock_guard lock(mutex_);
      busy_ = false;
    }

   private:
    void watch() {
      std::unique_lock lock(mutex_);
      while (!stop_) {
        if (!busy_) {
          cv_.wait(lock, [&] { return busy_ || stop_; });
          continue;
        }
        const auto deadline = started_ + std::chrono::seconds(2);
        const auto seen = started_;
        cv_.wait_until(lock, deadline, [&] { return stop_ || !busy_ || started_ != seen; });
        if (busy_ && started_ == seen && std::chrono::steady_clock::now() >= deadline) {
          std::fprintf(stderr, "%s: an input ran for over 2 s (a hang): %s\n", target_.c_str(), printable(input_).c_str());
          std::abort();
        }
      }
    }
    std::string target_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::string input_;
    std::chrono::steady_clock::time_point started_{};
    bool busy_ = false;
    bool stop_ = false;
    std::thread thread_;
  };

  std::string mutate() {
    static const std::vector<std::string> kTokens = {
        "nan", "NaN", "-nan", "inf", "-inf", "1e999", "-1", "0", "-0", "18446744073709551615", "18446744073709551616",
        "9223372036854775808", "4294967297", "1e-320", "0x", "0.5", ".", "e", "TB", "PiB", "GiB", "ms", "h", "d",
        ",", ",,", "\n", "\r\n", "\t", " ", "\"", "'", ":", "- ", "{", "}", "[", "]", "{}", "[]", "null", "true",
        "#", "&a", "*a", "!!", "%", "\\u0000", std::string(1, '\0'), std::string(300, '9'), std::string(64, ',')};
    std::string s = corpus_.empty() ? std::string() : corpus_[pick(corpus_.size())];
    const std::size_t edits = 1 + pick(4);
    for (std::size_t e = 0; e < edits; ++e) {
      const std::size_t at = s.empty() ? 0 : pick(s.size() + 1);
      switch (pick(7)) {
        case 0:  // flip a byte
          if (!s.empty()) s[std::min(at, s.size() - 1)] ^= static_cast<char>(1 + pick(255));
          break;
        case 1:  // delete a run
          if (!s.empty()) s.erase(std::min(at, s.size() - 1), 1 + pick(8));
          break;
        case 2:  // insert a token
        case 3:
          s.insert(at, kTokens[pick(kTokens.size())]);
          break;
        case 4: {  // replace a number with a token
          const std::size_t digit = s.find_first_of("0123456789", at);
          if (digit != std::string::npos) {
            const std::size_t end = s.find_first_not_of("0123456789.", digit);
            s.replace(digit, (end == std::string::npos ? s.size() : end) - digit, kTokens[pick(kTokens.size())]);
          }
          break;
        }
        case 5:  // splice in part of another seed
          if (!corpus_.empty()) {
            const std::string& other = corpus_[pick(corpus_.size())];
            if (!other.empty()) {
              const std::size_t from = pick(other.size());
              s.insert(at, other.substr(from, 1 + pick(32)));
            }
          }
          break;
        default:  // duplicate a line (repeated keys, rows)
          if (!s.empty()) {
            const std::size_t start = s.rfind('\n', std::min(at, s.size() - 1));
            const std::size_t begin = start == std::string::npos ? 0 : start + 1;
            const std::size_t end = s.find('\n', begin);
            const std::string line = s.substr(begin, end == std::string::npos ? std::string::npos : end - begin + 1);
            s.insert(begin, line);
          }
          break;
      }
      if (s.size() > 4096) s.resize(4096);
    }
    return s;
  }

  std::size_t pick(std::size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_); }

  std::string target_;
  std::mt19937_64 rng_;
  std::vector<std::string> corpus_;
};

// Runs per target: fixed so CI is repeatable; VGPU_FUZZ_RUNS raises it for a longer local session.
inline std::uint64_t fuzz_runs(std::uint64_t default_runs) {
  if (const char* env = std::getenv("VGPU_FUZZ_RUNS"); env != nullptr && *env != '\0') return std::strtoull(env, nullptr, 10);
  return default_runs;
}

}  // namespace apt::vgpu::fuzz
