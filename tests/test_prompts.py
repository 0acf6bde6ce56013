from trcgl.data.padchest import load_class_set
from trcgl.data.prompts import NORMAL_PROMPT, location_phrase, negation_prompt, prompt_for_row

CS = load_class_set("paper")


def test_location_phrases():
    assert location_phrase(["loc left", "loc costophrenic angle"]) == "in the left costophrenic angle"
    assert location_phrase(["loc right lower lobe"]) == "in the right lower lobe"
    assert location_phrase(["loc apical", "loc bilateral"]) == "in the lung apex on both sides"
    assert location_phrase(["loc left"]) == "on the left side"
    assert location_phrase([]) == ""
    assert location_phrase(["loc diffuse bilateral"]) == "in both lungs diffusely"
    assert location_phrase(["loc infradiaphragm"]) == "below the diaphragm"


def test_prompt_uses_the_rows_own_localizations_and_is_deterministic():
    sentences = [["pleural effusion", "loc left", "loc costophrenic angle"], ["cardiomegaly"]]
    p = prompt_for_row(["cardiomegaly", "pleural effusion"], CS, sentences, image_id="x", seed=0)
    assert "cardiomegaly" in p and "pleural effusion in the left costophrenic angle" in p
    assert p.index("cardiomegaly") < p.index("pleural effusion")  # class-set order
    assert p == prompt_for_row(["cardiomegaly", "pleural effusion"], CS, sentences, image_id="x", seed=0)
    variants = {prompt_for_row(["cardiomegaly"], CS, [], image_id=f"id{i}", seed=0) for i in range(30)}
    assert len(variants) > 1  # the template is a seeded draw


def test_descendant_labels_localise_their_class():
    sentences = [["consolidation", "loc right", "loc basal"]]
    p = prompt_for_row(["infiltrates"], CS, sentences, image_id="y")
    assert "infiltrates in the right lung base" in p


def test_normal_and_negation_prompts():
    assert prompt_for_row(["normal"], CS, []) == NORMAL_PROMPT
    assert prompt_for_row([], CS, []) == NORMAL_PROMPT
    assert negation_prompt(["pneumothorax", "pleural effusion"]) == \
        "chest x-ray with no evidence of pneumothorax or pleural effusion"
    assert negation_prompt(["normal"]) == NORMAL_PROMPT


def test_a_long_row_keeps_its_rarest_findings_in_the_prompt():
    """Five findings, four places: the head class goes, the tail class stays (the class set runs
    from the head to the tail), in class-set order."""
    row = ["infiltrates", "pleural effusion", "pneumonia", "nodule", "lung metastasis"]
    p = prompt_for_row(row, CS, [], image_id="z", seed=0)
    assert "lung metastasis" in p and "infiltrates" not in p
    assert p.index("pleural effusion") < p.index("pneumonia") < p.index("nodule") < p.index("lung metastasis")
