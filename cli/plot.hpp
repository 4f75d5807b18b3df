// Small plots a person would rather see than read.
#pragma once

#include <string>
#include <vector>

#include <caf/error.hpp>

namespace aicon {

/// An SVG line plot of the loss per step, with its range on the axes.
caf::error write_loss_svg(const std::string& path, const std::vector<double>& loss);

} // namespace aicon
