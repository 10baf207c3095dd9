// Formats prices for the visitor's locale; the page works without it.
document.querySelectorAll(".price[data-cents]").forEach((element) => {
  const euros = Number(element.dataset.cents) / 100;
  element.textContent = euros.toLocaleString(undefined, { minimumFractionDigits: 2 });
});
