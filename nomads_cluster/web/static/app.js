// Sends the ticked interests (and the city, if given) to /cluster/preview (nothing is
// stored) and shows the answer: the segment, why, and the chat room of the city.
"use strict";

const form = document.getElementById("interests-form");
const result = document.getElementById("result");
const labelOf = (key) => form.elements[key].parentElement.textContent.trim();

function element(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function showAnswer(answer) {
  const box = element("div", undefined, { class: "answer" });
  if (answer.no_interests) {
    box.append(element("h3", "No interest ticked"));
    box.append(element("p", "Tick what you like above: your segment comes from your interests."));
    result.replaceChildren(box);
    return;
  }
  const label = answer.label.split(", ").map(labelOf).join(", ");
  box.append(element("h3", `Your segment: ${answer.cluster} (${label})`));
  const reasons = answer.explanation.top_interests.map((item) => labelOf(item.interest));
  box.append(element("p", `What weighed most: ${reasons.join(", ")}.`));
  const scores = element("div", undefined, { class: "scores" });
  for (const [segment, part] of Object.entries(answer.explanation.normalised_scores)) {
    const id = `score-${segment}`;
    scores.append(
      element("label", `Segment ${segment}`, { for: id }),
      element("meter", undefined, { id, min: "0", max: "1", value: String(part) }),
      element("span", `${Math.round(part * 100)}%`),
    );
  }
  box.append(element("p", "How your interests match each segment:"), scores);
  if (answer.room) {
    box.append(element("p", `Your chat room: ${answer.room.id}, with people of segment ${answer.room.segment} in ${answer.room.city}.`));
  }
  result.replaceChildren(box);
}

function showError(message) {
  result.replaceChildren(element("p", message, { class: "error" }));
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const interests = {};
  for (const box of form.querySelectorAll("input[type=checkbox]")) interests[box.name] = box.checked;
  const body = { _id: "web-page", interests };
  const city = form.elements.city.value.trim();
  if (city) body.city = city;
  result.replaceChildren(element("p", "Finding your segment…"));
  try {
    const response = await fetch(form.dataset.endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    if (response.ok) showAnswer(answer);
    else showError(`${answer.title}: ${answer.detail}`);
  } catch (error) {
    showError(`The service did not answer (${error.message}). Try again.`);
  }
});
