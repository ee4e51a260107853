// Lesion masks drawn as semi-transparent fills over one viewport, toggled per lesion.

const cornerstone = window.cornerstone;
const COLORS = ["#ff3b30", "#ffcc00", "#34c759", "#0a84ff", "#bf5af2", "#ff9f0a"];

export class LesionOverlay {
  constructor(viewport, data, stateBox) {
    this.viewport = viewport;
    this.lesions = data.lesions; // {label: {z: [[row, column, length], ...]}}
    this.hidden = new Set();
    this.stateBox = stateBox;
    // Mask slice z is the z-th instance in ascending slice position, as the loader sorts them.
    // NOTE: a series the loader resampled (gaps, tilt) has a mask of another slice count and
    // is reported below rather than drawn on the nearest slices.
    if (data.shapeZyx[0] !== viewport.imageIds.length) {
      this.report(
        `The lesion mask has ${data.shapeZyx[0]} slices but the series shows ` +
          `${viewport.imageIds.length}; the overlay is not drawn.`,
      );
      this.lesions = {};
    }
    viewport.element.addEventListener("cornerstoneimagerendered", (event) => this.draw(event.detail));
    cornerstone.updateImage(viewport.element);
  }

  report(message) {
    if (this.stateBox) this.stateBox.textContent = message;
  }

  setVisible(label, visible) {
    if (visible) this.hidden.delete(String(label));
    else this.hidden.add(String(label));
    cornerstone.updateImage(this.viewport.element);
  }

  // Return the slice index with the most pixels of the lesion, or -1 when it has none.
  largestSlice(label) {
    const slices = this.lesions[String(label)] || {};
    let best = -1;
    let bestCount = -1;
    for (const [z, runs] of Object.entries(slices)) {
      const count = runs.reduce((sum, run) => sum + run[2], 0);
      if (count > bestCount) {
        best = Number(z);
        bestCount = count;
      }
    }
    return best;
  }

  draw(detail) {
    const z = String(this.viewport.index);
    const context = detail.canvasContext;
    context.save();
    cornerstone.setToPixelCoordinateSystem(detail.enabledElement, context);
    context.globalAlpha = 0.4;
    for (const [label, slices] of Object.entries(this.lesions)) {
      if (this.hidden.has(label) || !slices[z]) continue;
      context.fillStyle = COLORS[(Number(label) - 1) % COLORS.length];
      for (const [row, column, length] of slices[z]) {
        context.fillRect(column, row, length, 1);
      }
    }
    context.restore();
  }
}
