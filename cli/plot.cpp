#include "cli/plot.hpp"

#include <algorithm>
#include <fstream>

#include <fmt/format.h>

#include "runtime/error.hpp"

namespace aicon {

/// A small SVG line plot of the loss per step, with its range on the axes.
caf::error write_loss_svg(const std::string& path, const std::vector<double>& loss) {
  if (loss.empty())
    return make_error(errc::invalid_argument, "no steps to plot");
  const double w = 640, h = 360, left = 60, right = 20, top = 30, bottom = 40;
  double hi = *std::max_element(loss.begin(), loss.end());
  double lo = *std::min_element(loss.begin(), loss.end());
  if (hi <= lo)
    hi = lo + 1;
  std::string points;
  for (size_t i = 0; i < loss.size(); ++i) {
    double x = left + (w - left - right) * (loss.size() > 1 ? double(i) / (loss.size() - 1) : 0);
    double y = top + (h - top - bottom) * (1 - (loss[i] - lo) / (hi - lo));
    points += fmt::format("{:.1f},{:.1f} ", x, y);
  }
  std::ofstream f{path};
  f << fmt::format(
    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
    "font-family=\"sans-serif\" font-size=\"12\">\n"
    "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    "<text x=\"{2}\" y=\"18\">training loss per step (mean cross-entropy of the global batch)</text>\n"
    "<line x1=\"{2}\" y1=\"{4}\" x2=\"{2}\" y2=\"{5}\" stroke=\"black\"/>\n"
    "<line x1=\"{2}\" y1=\"{5}\" x2=\"{3}\" y2=\"{5}\" stroke=\"black\"/>\n"
    "<text x=\"4\" y=\"{4}\">{6:.3f}</text>\n<text x=\"4\" y=\"{5}\">{7:.3f}</text>\n"
    "<text x=\"{2}\" y=\"{8}\">0</text>\n<text x=\"{3}\" y=\"{8}\" text-anchor=\"end\">step {9}</text>\n"
    "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{10}\"/>\n</svg>\n",
    w, h, left, w - right, top, h - bottom, hi, lo, h - bottom + 16, loss.size() - 1, points);
  if (!f.flush())
    return make_error(errc::io_error, fmt::format("cannot write {}", path));
  return caf::none;
}

} // namespace aicon
