// `std::visit(Overloaded{[](const A&) {...}, [](const B&) {...}}, variant)`: exhaustive
// visitation of the closed step sets (normalizers, pre-tokenizers, decoders, processors).
#pragma once

namespace tandem::tokenizer {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};

}  // namespace tandem::tokenizer
