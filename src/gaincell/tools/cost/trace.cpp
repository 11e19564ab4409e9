#include "gaincell/tools/cost/trace.h"

#include "gaincell/attention/gaincell_attention.h"

namespace gaincell::cost {

HardwareEventCounts event_counts_from_arrays(const ArrayEvents& e, int64_t tokens, int heads,
                                             int layers) {
  HardwareEventCounts c;
  c.tokens = tokens;
  c.heads = heads;
  c.layers = layers;
  static_cast<HardwareEvents&>(c) = e;
  return c;
}

std::optional<HardwareEventCounts> decode_session_events(const DecodeSession& session,
                                                         const GPT2Config& config) {
  ArrayEvents total;
  for (int l = 0; l < session.num_layers(); ++l) {
    const auto* arrays = dynamic_cast<const GainCellDecodeState*>(&session.state(l));
    if (arrays == nullptr) return std::nullopt;
    total += arrays->events();
  }
  return event_counts_from_arrays(total, session.position(), config.n_head, config.n_layer);
}

}  // namespace gaincell::cost
