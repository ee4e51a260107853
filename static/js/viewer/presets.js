// CT window presets as level (centre) and width in HU.
// Brain L40/W80 is the standard brain window. Stroke windows narrow the width to show subtle
// grey-white matter loss: Turner and Holdsworth, Br J Radiol 2011;84:1061-1066 use W40/L40, and
// a study of acute stroke CT in Radiology 1999;213:150-155 starts at L32/W8, so L35/W35 lies
// within that practice.
// NOTE: subdural L75/W215 and bone L600/W2800 are the values quoted for this project from
// Radiopaedia's "Windowing (CT)" article (https://radiopaedia.org/articles/windowing-ct).
// They were not rechecked against the article, so recheck them before relying on them.
export const WINDOW_PRESETS = {
  brain: { level: 40, width: 80, label: "Brain" },
  stroke: { level: 35, width: 35, label: "Stroke" },
  subdural: { level: 75, width: 215, label: "Subdural" },
  bone: { level: 600, width: 2800, label: "Bone" },
};

// Order of the presets for the Alt+1 to Alt+4 shortcuts.
export const PRESET_KEYS = ["brain", "stroke", "subdural", "bone"];
