#include "gaincell/tools/fit/device.h"

namespace gaincell::fit {

DeviceModel device_from_fit(const PaperFit& fit, const LinearSlopeFit& slope) {
  DeviceModel d;
  d.coefficients = fit.coefficients;
  d.vin = fit.vin;
  d.offset = fit.offset;
  d.linear_slope = slope.slope;
  d.linear_intercept = slope.intercept;
  d.rms_ua = fit.rms_ua;
  d.max_abs_ua = fit.max_abs_ua;
  return d;
}

}  // namespace gaincell::fit
