// Command-line harness around the emulated kernels (tests/cuda_emulator/emulator.py drives it).
//
//   harness OP orders=fwd,rev,rand:7 KEY=VALUE ... in:NAME=PATH:PAD ... out:NAME=PATH:BYTES:PAD ...
//
// in:  the file's bytes are the tensor's storage span; they are placed PAD bytes past a 256-byte aligned
//      address (the alignment the tensor has on a GPU) in an allocation of exactly PAD + size bytes whose first
//      PAD bytes are poisoned for ASan, so any access outside the span is reported.
// out: the same for an output span of BYTES bytes, filled with 0xff (NaN) before each run; after the run under
//      order O it is written to PATH.O. scratch buffers (workspaces) are allocated the same way by the ops.
// Integers / floats / lists (comma separated) are KEY=VALUE. Every op runs once per order.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cuda_on_cpu.h"

namespace harness {

struct Buffer {
  void* raw = nullptr;  // allocation start (PAD poisoned bytes, then the span)
  char* data = nullptr;
  size_t bytes = 0, pad = 0;
  std::string path;
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
#if CUDA_EMU_ASAN
    if (raw != nullptr) ASAN_UNPOISON_MEMORY_REGION(raw, pad);
#endif
    std::free(raw);
  }
  void allocate(size_t n, size_t p) {
    bytes = n;
    pad = p % 256;
    if (posix_memalign(&raw, 256, pad + bytes + (pad + bytes == 0 ? 1 : 0)) != 0) cuda_emu::fail("out of memory");
    data = static_cast<char*>(raw) + pad;
#if CUDA_EMU_ASAN
    ASAN_POISON_MEMORY_REGION(raw, pad);
#endif
  }
  template <typename T>
  T* as() const {
    return reinterpret_cast<T*>(data);
  }
  void fill_poison() { std::memset(data, 0xff, bytes); }
};

class Job {
 public:
  Job(int argc, char** argv) {
    if (argc < 2) cuda_emu::fail("usage: harness OP KEY=VALUE ...");
    op_ = argv[1];
    for (int i = 2; i < argc; ++i) {
      std::string a = argv[i];
      const size_t eq = a.find('=');
      if (eq == std::string::npos) cuda_emu::fail("bad argument " + a);
      std::string key = a.substr(0, eq), value = a.substr(eq + 1);
      if (key.rfind("in:", 0) == 0) {
        load_input(key.substr(3), value);
      } else if (key.rfind("out:", 0) == 0) {
        const auto parts = split(value, ':');
        if (parts.size() != 3) cuda_emu::fail("bad output " + a);
        auto& b = outputs_[key.substr(4)];
        b = std::make_unique<Buffer>();
        b->allocate(std::stoull(parts[1]), std::stoull(parts[2]));
        b->path = parts[0];
      } else {
        values_[key] = value;
      }
    }
  }
  const std::string& op() const { return op_; }
  bool has(const std::string& k) const { return values_.count(k) || inputs_.count(k) || outputs_.count(k); }
  int64_t i(const std::string& k) const { return std::stoll(value(k)); }
  double f(const std::string& k) const { return std::stod(value(k)); }
  std::vector<int64_t> v(const std::string& k) const {
    std::vector<int64_t> out;
    for (const auto& s : split(value(k), ',')) out.push_back(std::stoll(s));
    return out;
  }
  Buffer& in(const std::string& k) const { return *find(inputs_, k); }
  Buffer* in_opt(const std::string& k) const { return inputs_.count(k) ? inputs_.at(k).get() : nullptr; }
  Buffer& out(const std::string& k) const { return *find(outputs_, k); }
  Buffer* out_opt(const std::string& k) const { return outputs_.count(k) ? outputs_.at(k).get() : nullptr; }

  // Runs fn once per order of orders=..., outputs poisoned before and written to PATH.ORDER after each run.
  void run(const std::function<void()>& fn) const {
    for (const auto& o : split(value("orders"), ',')) {
      if (o == "fwd") {
        cuda_emu::set_order(cuda_emu::Order::kForward, 0);
      } else if (o == "rev") {
        cuda_emu::set_order(cuda_emu::Order::kReverse, 0);
      } else if (o.rfind("rand:", 0) == 0) {
        cuda_emu::set_order(cuda_emu::Order::kRandom, std::stoull(o.substr(5)));
      } else {
        cuda_emu::fail("unknown order " + o);
      }
      for (auto& [name, b] : outputs_) b->fill_poison();
      fn();
      for (auto& [name, b] : outputs_) {
        const std::string path = b->path + "." + o;
        FILE* fp = std::fopen(path.c_str(), "wb");
        if (fp == nullptr || std::fwrite(b->data, 1, b->bytes, fp) != b->bytes) cuda_emu::fail("cannot write " + path);
        std::fclose(fp);
      }
    }
  }

 private:
  static std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    size_t start = 0;
    for (;;) {
      const size_t p = s.find(sep, start);
      out.push_back(s.substr(start, p == std::string::npos ? std::string::npos : p - start));
      if (p == std::string::npos) return out;
      start = p + 1;
    }
  }
  const std::string& value(const std::string& k) const {
    auto it = values_.find(k);
    if (it == values_.end()) cuda_emu::fail("missing argument " + k);
    return it->second;
  }
  template <typename M>
  static Buffer* find(const M& m, const std::string& k) {
    auto it = m.find(k);
    if (it == m.end()) cuda_emu::fail("missing buffer " + k);
    return it->second.get();
  }
  void load_input(const std::string& name, const std::string& spec) {
    const size_t colon = spec.rfind(':');
    const std::string path = spec.substr(0, colon);
    FILE* fp = std::fopen(path.c_str(), "rb");
    if (fp == nullptr) cuda_emu::fail("cannot read " + path);
    std::fseek(fp, 0, SEEK_END);
    const size_t n = size_t(std::ftell(fp));
    std::fseek(fp, 0, SEEK_SET);
    auto& b = inputs_[name];
    b = std::make_unique<Buffer>();
    b->allocate(n, std::stoull(spec.substr(colon + 1)));
    if (n != 0 && std::fread(b->data, 1, n, fp) != n) cuda_emu::fail("short read " + path);
    std::fclose(fp);
  }

  std::string op_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::unique_ptr<Buffer>> inputs_, outputs_;
};

// A poisoned scratch buffer of exactly n elements of T (a workspace the launcher would allocate).
template <typename T>
struct Scratch {
  Buffer buf;
  explicit Scratch(int64_t n) {
    buf.allocate(size_t(n) * sizeof(T), 0);
    buf.fill_poison();
  }
  T* get() { return buf.as<T>(); }
};

// Element type codes shared with emulator.py.
enum DType : int { kF32 = 0, kF16 = 1, kBF16 = 2, kF64 = 3 };

// Calls f(T* null) for the CUDA element type of a kernel dtype code (f32, f16, bf16).
template <typename F>
void with_dtype(int64_t code, F&& f) {
  switch (code) {
    case kF32: f(static_cast<float*>(nullptr)); break;
    case kF16: f(static_cast<__half*>(nullptr)); break;
    case kBF16: f(static_cast<__nv_bfloat16*>(nullptr)); break;
    default: cuda_emu::fail("unsupported kernel dtype " + std::to_string(code));
  }
}

}  // namespace harness
