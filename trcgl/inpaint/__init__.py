"""The second paper (normal X-ray inpainting augmentation): a DiT trained on normal radiographs
(:mod:`.normal_dit`), Grad-CAM masks of head-class lesions (:mod:`.masks`), an entanglement guard
in place of the paper's LLM module (:mod:`.guard`), RePaint inpainting that erases head lesions
and their labels (:mod:`.repaint`) and progressive incremental learning (:mod:`.pil`)."""
