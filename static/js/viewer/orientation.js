// Patient orientation letters for DICOM direction cosines (LPS: +x left, +y posterior, +z head).

function letterFor(vector) {
  const [x, y, z] = vector;
  const letters = [
    [x, "L", "R"],
    [y, "P", "A"],
    [z, "H", "F"],
  ];
  // The letters of every axis with a large enough component, the largest first, as in "LP".
  return letters
    .filter(([value]) => Math.abs(value) > 0.25)
    .sort((a, b) => Math.abs(b[0]) - Math.abs(a[0]))
    .map(([value, positive, negative]) => (value > 0 ? positive : negative))
    .join("");
}

// Return the letters at the right, left, bottom and top edge of an unrotated, unflipped image.
export function orientationMarkers(rowCosines, columnCosines) {
  if (!rowCosines || !columnCosines) return null;
  const negate = (vector) => vector.map((value) => -value);
  return {
    right: letterFor(rowCosines),
    left: letterFor(negate(rowCosines)),
    bottom: letterFor(columnCosines),
    top: letterFor(negate(columnCosines)),
  };
}
