(() => {
  let active = 0;
  const shown = (id) => {
    const element = document.getElementById(id);
    return element && element.offsetParent !== null;
  };
  const columns = () => [...document.querySelectorAll('[id^="grade-"]')]
    .filter((el) => el.offsetParent !== null);
  const highlight = () => columns().forEach((el, index) =>
    el.closest('.wb-response')?.classList.toggle('wb-active', index === active));
  const press = (selector) => document.querySelector(selector)?.click();
  const typing = (target) => target.isContentEditable || ['TEXTAREA', 'SELECT'].includes(target.tagName)
    || (target.tagName === 'INPUT' && !['radio', 'checkbox', 'button'].includes(target.type));
  document.addEventListener('keydown', (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (shown('review-panel')) {
      const grades = columns();
      if (/^[1-5]$/.test(key) && grades.length) {
        active = Math.min(active, grades.length - 1);
        grades[active].querySelector(`input[value="${key}"]`)?.click();
        active = (active + 1) % grades.length;
      } else if (key === 'ArrowRight' || key === 'ArrowLeft') {
        const step = key === 'ArrowRight' ? 1 : grades.length - 1;
        active = (active + step) % Math.max(grades.length, 1);
      } else if ('abcd'.includes(key)) press(`#better input[value="${key.toUpperCase()}"]`);
      else if (key === 't') press('#better input[value="tie"]');
      else if (key === 's') press('#save');
      else if (key === 'p') { press('#previous'); active = 0; }
      else if (key === 'k') { press('#skip'); active = 0; }
      else if (key === 'n') { press('#save-next'); active = 0; }
      else if (key === 'u') { press('#next-ungraded'); active = 0; }
      else return;
      event.preventDefault();
      highlight();
    } else if (shown('blind-panel')) {
      const buttons = {a: '#blind-left', b: '#blind-right', t: '#blind-tie', x: '#blind-both-bad', n: '#blind-next'};
      if (!(key in buttons)) return;
      event.preventDefault();
      press(buttons[key]);
    }
  });
  document.addEventListener('click', (event) => {
    const grade = event.target.closest?.('[id^="grade-"]');
    if (grade) active = columns().indexOf(grade);
    if (event.target.closest?.('#save-next, #next-ungraded, #previous, #skip')) active = 0;
    setTimeout(highlight, 0);
  });
})();
