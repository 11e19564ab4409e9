// The fit's side of the device file: a DeviceModel (format in hw/device_file.h, where the
// hardware configuration reads it) from a polynomial fit and a linear-slope fit.
#pragma once

#include "gaincell/hw/device_file.h"
#include "gaincell/tools/fit/cell_fit.h"

namespace gaincell::fit {

using gaincell::DeviceModel;
using gaincell::kDeviceFormat;
using gaincell::kDeviceVersion;
using gaincell::read_device_file;

DeviceModel device_from_fit(const PaperFit& fit, const LinearSlopeFit& slope);

}  // namespace gaincell::fit
