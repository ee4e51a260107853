// CT window presets as level (centre) and width in HU. docs/user-guide.md ("Window presets")
// lists each preset's source and how closely it matches.
// Brain L40/W80 and bone L600/W2800 equal the brain and temporal-bone windows of Radiopaedia's
// "Windowing (CT)" (https://radiopaedia.org/articles/windowing-ct). Subdural L75/W215 is the
// midpoint of that article's subdural ranges, W130-300 and L50-100.
// NOTE: those values were checked against the article's list as quoted in public code, not
// against the article itself.
// Stroke L35/W35 is the project's choice, and no source gives it. Turner and Holdsworth, Br J
// Radiol 2011;84:1061-1066, use L40/W40, and Lev et al., Radiology 1999;213:150-155, start at
// L32/W8. L35/W35 lies between the two.
export const WINDOW_PRESETS = {
  brain: { level: 40, width: 80, label: "Brain" },
  stroke: { level: 35, width: 35, label: "Stroke" },
  subdural: { level: 75, width: 215, label: "Subdural" },
  bone: { level: 600, width: 2800, label: "Bone" },
};

// Order of the presets for the Alt+1 to Alt+4 shortcuts.
export const PRESET_KEYS = ["brain", "stroke", "subdural", "bone"];
